"""Index data is refused, with a reason, when no worker could serve it; forward-compatibility rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from index_store.errors import CorruptIndex, SpecMismatch
from index_store.repository import IndexMeta
from index_store.spec import EmbedderSpec
from index_store.validation import check_index

SPEC = EmbedderSpec("resnet18", "random:0", resize=64, crop=64)


def meta(**kw) -> IndexMeta:  # type: ignore[no-untyped-def]
    base = dict(name="idx", kind="exact", k=2, dim=512, n_vectors=3, spec=SPEC.to_dict(), threshold=1.0)
    base.update(kw)
    return IndexMeta(**base)  # type: ignore[arg-type]


VEC = np.zeros((3, 512), dtype=np.float32)


@pytest.mark.parametrize(
    ("m", "vectors", "message"),
    [
        (meta(n_vectors=0), np.zeros((0, 512), np.float32), "holds no vectors"),
        (meta(threshold=float("nan")), VEC, "threshold nan"),
        (meta(kind="bogus"), VEC, "unknown kind 'bogus'"),
        (meta(k=0), VEC, "k must be at least 1"),
        (meta(), np.full((3, 512), np.inf, np.float32), "NaN or infinite"),
        (meta(dim=256, n_vectors=3), np.zeros((3, 256), np.float32), "differs from 512"),
        (meta(n_vectors=4), VEC, "metadata says (4, 512)"),
    ],
)
def test_unservable_index_data_is_refused_with_its_reason(m, vectors, message):
    with pytest.raises(CorruptIndex, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_index(m, m.kind if m.kind != "bogus" else "exact", vectors)


def test_a_good_index_passes():
    check_index(meta(), "exact", VEC)


def test_unknown_meta_fields_are_ignored_but_unknown_spec_fields_refused():
    raw = json.loads(meta(version=3).to_json())
    newer = IndexMeta.from_json(json.dumps({**raw, "added_by_a_newer_version": {"x": 1}}).encode())
    assert newer.version == 3
    with pytest.raises(SpecMismatch, match="unknown to this framewatch"):
        EmbedderSpec.from_dict({**SPEC.to_dict(), "patch_layers": ["layer2"]})


@pytest.mark.parametrize("raw", [b"[]", b'{"name": "i", "kind": "exact", "k": "two", "dim": 512, '
                                     b'"n_vectors": 1, "spec": {}}', b"not json"])  # fmt: skip
def test_malformed_metadata_is_a_corrupt_index(raw):
    with pytest.raises(CorruptIndex):
        IndexMeta.from_json(raw)
