"""Memory kinds (exact, kmeans, coreset) come from one registry: each entry is fitted, scored, calibrated,
stored and taught by feedback through the same public paths, so a new kind is one entry."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation import evaluate
from framewatch.cli import build_parser
from index_store.feedback import Mark, absorb
from index_store.fitting import FitConfig, fit
from index_store.memories import MEMORIES, NAMES
from index_store.positional import PositionalMemory, build_positional
from index_store.repository import IndexMeta
from index_store.spec import EmbedderSpec

SPEC = EmbedderSpec("resnet18", "random:0", resize=64, crop=64)


def fit_args(*flags: str):  # type: ignore[no-untyped-def]
    return build_parser("index").parse_args(["index", "fit", "imgs", "--name", "x", *flags])


def config_for(name: str) -> FitConfig:
    """The fit config ``index fit`` makes for this memory kind (its size flag set to 8)."""
    option = MEMORIES[name].size_option
    return FitConfig(**({option: 8} if option else {}))


def test_the_registry_holds_exactly_the_memory_kinds_index_fit_can_make():
    sized = [m for m in MEMORIES.values() if m.size_option]
    assert [m.name for m in MEMORIES.values() if not m.size_option] == ["exact"]  # the default, no flag
    for m in sized:
        assert getattr(fit_args(f"--{m.size_option}", "8"), m.size_option) == 8  # a real flag of index fit
    assert {config_for(name).memory for name in NAMES} == set(NAMES) == {"exact", "kmeans", "coreset"}
    assert FitConfig().memory == "exact" and config_for("kmeans").size == 8


def test_every_entry_supplies_every_operation_and_a_report_label():
    for m in MEMORIES.values():
        assert all(callable(op) for op in (m.select, m.select_per_cell, m.reduce)), m.name
        assert m.feedback_method and m.label and (m.holds_training_set or m.threshold_kept), m.name
    names = [method.name for method in evaluate.methods_for([5], coresets=[7])]
    assert names == ["exact", "C=5", "coreset=7"]  # the labels of eval's tables (C as in the DN2 paper)


def test_the_features_flag_keeps_its_old_name():
    assert fit_args("--kind", "patch").kind == fit_args("--features", "patch").kind == "patch"
    assert fit_args().kind == "global"


@pytest.mark.parametrize("name", NAMES)
def test_each_memory_kind_fits_scores_calibrates_and_absorbs_feedback(name):
    rng = np.random.default_rng(0)
    train = rng.normal(size=(60, 512)).astype(np.float32)
    index, cal, _ = fit(train, config_for(name))
    assert index.memory == name and index.size == (60 if name == "exact" else 8)
    assert cal.method == ("leave-one-out" if MEMORIES[name].holds_training_set else "split")
    odd = np.full((1, 512), 3.0, np.float32)
    assert index.score(odd)[0] > cal.threshold > 0
    meta = IndexMeta(name="cams", kind=index.memory, k=2, dim=512, n_vectors=index.size, spec=SPEC.to_dict(),
                     version=1, threshold=cal.threshold, calibration=cal.to_dict())  # fmt: skip
    new_meta, new_index = absorb(meta, index, odd, [Mark("f1", "alice")])
    assert new_meta.kind == name and new_index.score(odd)[0] < new_meta.threshold
    assert np.all(new_index.score(train) <= index.score(train) + 1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_each_memory_kind_builds_per_cell_and_keeps_its_stored_name(name):
    grids = np.random.default_rng(1).normal(size=(12, 3, 4, 8)).astype(np.float32)
    memory = build_positional(grids, 1, name, per_cell=0 if name == "exact" else 4)
    vectors, layout = memory.to_arrays()
    assert layout["kind"] == name  # the stored field keeps its name: existing versions load unchanged
    back = PositionalMemory.from_arrays(vectors, layout)
    assert back.memory == name and np.array_equal(back.search_grid(grids), memory.search_grid(grids))


def test_an_unknown_memory_kind_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="memory kind must be one of exact, kmeans, coreset, not 'ivf'"):
        build_positional(np.zeros((2, 2, 2, 4), np.float32), 1, "ivf")
