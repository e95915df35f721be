"""Which Redis eviction policies may remove index keys, and where the metrics listen (settings)."""

from __future__ import annotations

import pytest

from framewatch.settings import ConfigError, metrics_host
from index_store.redis_policy import SAFE_POLICIES, UNSAFE_POLICIES, eviction_risk


@pytest.mark.parametrize("policy", UNSAFE_POLICIES)
def test_allkeys_policies_can_evict_index_keys(policy):
    risk = eviction_risk(policy)
    assert risk is not None and policy in risk


@pytest.mark.parametrize("policy", SAFE_POLICIES)
def test_noeviction_and_volatile_policies_leave_index_keys_alone(policy):
    assert eviction_risk(policy) is None  # framewatch sets no TTL on index keys


def test_an_unknown_policy_is_not_taken_for_safe_and_an_unreadable_one_is_let_through():
    assert "does not know" in (eviction_risk("allkeys-something-new") or "")
    assert eviction_risk(None) is None


def test_metrics_host_flag_over_environment_over_default():
    assert metrics_host(None, {}) == "0.0.0.0"
    assert metrics_host(None, {"FRAMEWATCH_METRICS_HOST": "127.0.0.1"}) == "127.0.0.1"
    assert metrics_host("::1", {"FRAMEWATCH_METRICS_HOST": "127.0.0.1"}) == "::1"
    assert metrics_host("[::]", {}) == "::"


@pytest.mark.parametrize("bad", ["", "  ", "127.0.0.1:9108", "host name"])
def test_a_metrics_host_with_a_port_or_blank_is_one_clear_error(bad):
    with pytest.raises(ConfigError, match="--metrics-port"):
        metrics_host(bad, {})
