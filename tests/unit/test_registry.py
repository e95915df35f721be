"""The backbone registry and the spec it backs: one table, reproducible patch specs (no torch)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from index_store.errors import SpecMismatch
from index_store.registry import BACKBONES
from index_store.spec import EmbedderSpec, default_spec


def test_every_backbone_has_a_global_feature_and_taps_at_stride_8_and_16() -> None:
    assert set(BACKBONES) >= {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                              "efficientnet_lite0", "efficientnet_lite2"}  # fmt: skip
    for b in BACKBONES.values():
        assert b.dim > 0
        assert [t.stride for t in b.taps] == [8, 16]
        assert default_spec(b.name).dim == b.dim
        patch = default_spec(b.name, "patch")
        assert patch.kind == "patch" and patch.layers == tuple(t.module for t in b.taps)
        assert patch.dim == (patch.proj_dim or sum(t.channels for t in b.taps))


def test_patch_spec_round_trips_through_its_stored_form() -> None:
    spec = default_spec("resnet50", "patch")
    stored = json.loads(json.dumps(spec.to_dict()))
    assert stored["kind"] == "patch" and stored["layers"] == ["layer2", "layer3"]
    assert stored["proj_seed"] == 0 and stored["proj_dim"] == 256
    again = EmbedderSpec.from_dict(stored)
    assert again == spec and again.fingerprint() == spec.fingerprint()
    assert again.label() == "resnet50/IMAGENET1K_V1/patch"


def test_a_spec_this_version_cannot_reproduce_is_refused_with_the_reason() -> None:
    with pytest.raises(SpecMismatch, match="no feature tap 'layer4'"):
        EmbedderSpec("resnet18", kind="patch", layers=("layer2", "layer4")).dim  # noqa: B018
    with pytest.raises(SpecMismatch, match="unknown features 'voxel'"):
        EmbedderSpec("resnet18", kind="voxel").dim  # noqa: B018
    with pytest.raises(SpecMismatch, match=r"field\(s\) \[.pooling.\] unknown to this framewatch"):
        EmbedderSpec.from_dict({**default_spec("resnet18", "patch").to_dict(), "pooling": "gem"})
    with pytest.raises(SpecMismatch, match="unknown backbone"):
        EmbedderSpec("vgg16").dim  # noqa: B018


def test_global_specs_keep_the_fingerprint_they_had_before_patch_fields() -> None:
    """Feature caches and running workers keyed by the old fingerprint stay valid."""
    import hashlib

    spec = default_spec("efficientnet_lite0")
    old_fields = {
        k: v for k, v in spec.to_dict().items() if k not in ("kind", "layers", "proj_dim", "proj_seed")
    }
    old = hashlib.sha256(json.dumps(old_fields, sort_keys=True).encode()).hexdigest()[:16]
    assert spec.fingerprint() == old
    assert default_spec("efficientnet_lite0", "patch").fingerprint() != old


def test_backbone_modules_do_not_import_each_other() -> None:
    code = "import sys, index_store.efficientnet_lite; print('index_store.backbones' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_worker_side_never_imports_evaluation() -> None:
    code = "import sys, worker.scoring, index_store.build; print(sorted(m for m in sys.modules if m.startswith('evaluation')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
