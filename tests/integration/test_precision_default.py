"""Without --precision, a new index is fit at the default precision (bf16 on CPUs with it) and a refit keeps
the precision of the index it replaces, so indexes fit before the default changed keep scoring as before."""

from __future__ import annotations

import pytest

from framewatch.cli import main
from index_store import openvino_runtime
from index_store.repository import IndexRepository
from tests.conftest import png_bytes

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not openvino_runtime.installed(), reason="openvino is not installed"),
]


def test_new_indexes_get_the_default_and_refits_keep_theirs(redis_url, redis_client, unique, monkeypatch,
                                                            tmp_path, capsys):  # fmt: skip
    folder = tmp_path / "normal"
    folder.mkdir()
    for i in range(6):
        (folder / f"{i:02d}.png").write_bytes(png_bytes(i))
    prefix = f"t-{unique}"
    monkeypatch.setenv("FRAMEWATCH_REDIS_PREFIX", prefix)
    monkeypatch.setenv("FRAMEWATCH_CACHE", str(tmp_path / "cache"))
    repo = IndexRepository(redis_client, prefix)

    def fit(name: str) -> str:
        argv = ["index", "fit", str(folder), "--name", name, "--backbone", "resnet18", "--weights", "random:0",
                "--crop", "64", "--device", "cpu", "--redis", redis_url]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        return repo.meta(name).embedder_spec.precision

    assert fit("old") == "fp32"  # fit under the old default (the suite pins it)
    monkeypatch.delenv("FRAMEWATCH_PRECISION")
    default = openvino_runtime.default_precision("auto", "cpu")
    assert fit("new") == default
    assert fit("old") == "fp32"  # a refit keeps its index's precision: no --new-backbone, workers keep theirs
    assert repo.meta("old").version == 2
