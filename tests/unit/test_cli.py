"""The command line as a user meets it: fast help, every flag explained, misuse stopped with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from framewatch.cli import COMMANDS, build_parser, main
from framewatch.services import free_port

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "faiss", "timm", "kafka", "redis", "numpy")


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "framewatch.cli", *argv], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, cwd=ROOT,
    )  # fmt: skip


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["work", "--help"], ["index", "fit", "--help"]])
def test_help_and_version_import_nothing_heavy(argv):
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['framewatch', *{argv!r}]\n"
        "try:\n    runpy.run_module('framewatch.cli', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout[-500:]


def test_version_names_the_package():
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("framewatch ")


def test_top_level_help_lists_every_command():
    out = run_cli("--help").stdout
    for name, (_module, summary) in COMMANDS.items():
        assert name in out and summary.split()[0] in out


OWN_COMMANDS = [
    ["index", "fit"],
    ["index", "list"],
    ["index", "activate"],
    ["produce"],
    ["work"],
    ["watch"],
    ["demo"],
]


def _subparser(path: list[str]):  # type: ignore[no-untyped-def]
    parser = build_parser(path[0])
    for name in path:
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = sub.choices[name]
    return parser


@pytest.mark.parametrize("path", OWN_COMMANDS, ids=" ".join)
def test_every_flag_has_a_help_line(path):
    parser = _subparser(path)
    missing = [a.option_strings or a.dest for a in parser._actions if not a.help]
    assert not missing, f"framewatch {' '.join(path)}: flags without help: {missing}"


def test_help_shows_defaults():
    out = run_cli("work", "--help").stdout
    assert "(default: 32)" in out  # --max-batch
    assert "(default: framewatch-workers)" in out
    assert "(default: 0)" in out  # --window: zero defaults are shown too


MISUSE = [
    (["index", "fit", "imgs", "--name", "x", "--k", "0"], "--k"),
    (["index", "fit", "imgs", "--name", "x", "--clean-fraction", "1.5"], "--clean-fraction"),
    (["index", "fit", "imgs", "--name", "x", "--target-fpr", "2"], "--target-fpr"),
    (["index", "fit", "imgs", "--name", "x", "--target-fpr", "nan"], "--target-fpr"),
    (["index", "fit", "imgs", "--name", "x", "--clusters", "-1"], "--clusters"),  # 0 = exact (patch indexes)
    (["work", "--index", "dock", "--max-batch", "0"], "--max-batch"),
    (["work", "--index", "dock", "--route", "nonsense"], "--route"),
    (["work", "--index", "dock", "--route", "cam-*="], "--route"),
    (["work", "--index", "dock", "--route", "cam-*={camera}"], "--route"),
    (["work", "--index", "dock", "--index-memory", "lots"], "--index-memory"),
    (["work", "--index", "dock", "--index-load-wait", "-1"], "--index-load-wait"),
    (["work", "--index", "dock", "--metrics-port", "70000"], "--metrics-port"),
    (["work", "--index", "dock", "--max-wait", "-1"], "--max-wait"),
    (["produce", "frames", "--source", "cam1", "--every", "0"], "--every"),
    (["watch", "--kafka"], "--kafka"),
    (["nonsense"], "invalid choice"),
    (["--log-format", "xml", "watch"], "--log-format"),
]


@pytest.mark.parametrize("argv,flag", MISUSE, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_misuse_is_one_line_and_a_nonzero_exit(argv, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert flag in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def _one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("framewatch: error: "), err
    return lines[0]


def test_fit_checks_its_inputs_before_any_work(tmp_path, capsys):
    closed = f"redis://127.0.0.1:{free_port()}/0"
    line = _one_line_error(main(["index", "fit", str(tmp_path / "missing"), "--name", "x", "--redis", closed]),
                           capsys.readouterr().err)  # fmt: skip
    assert "is not a folder" in line
    line = _one_line_error(main(["index", "fit", str(tmp_path), "--name", "x", "--backbone", "vgg", "--redis", closed]),
                           capsys.readouterr().err)  # fmt: skip
    assert "vgg" in line
    line = _one_line_error(
        main(["index", "fit", str(tmp_path), "--name", "x", "--redis", closed]), capsys.readouterr().err
    )
    assert "images under" in line  # found before Redis is contacted, before any embedding


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet18"])
def test_fit_default_weights_follow_the_backbone(tmp_path, capsys, backbone):
    """No --weights: the backbone's own pretrained weights; the fit gets as far as Redis (closed here)."""
    from tests.conftest import png_bytes

    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(i))
    closed = f"redis://127.0.0.1:{free_port()}/0"
    line = _one_line_error(main(["index", "fit", str(tmp_path), "--name", "x", "--backbone", backbone, "--redis", closed]),
                           capsys.readouterr().err)  # fmt: skip
    assert "unreachable" in line and "weights" not in line


def test_work_rejects_a_heartbeat_longer_than_the_session(capsys):
    code = main(["work", "--index", "dock", "--kafka", "127.0.0.1:1", "--redis", "redis://127.0.0.1:1/0",
                 "--heartbeat-ms", "20000"])  # fmt: skip
    assert "--heartbeat-ms" in _one_line_error(code, capsys.readouterr().err)


def test_settings_precedence_flag_then_env_then_config_file(tmp_path, monkeypatch, capsys):
    """Which Redis `index list` tries shows which setting won (each port is closed)."""
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    config = tmp_path / "framewatch.toml"
    config.write_text(f'redis = "redis://127.0.0.1:{file_port}/0"\nFRAMEWATCH_REDIS_PREFIX = "fw"\n')
    monkeypatch.delenv("FRAMEWATCH_REDIS", raising=False)

    line = _one_line_error(main(["--config", str(config), "index", "list"]), capsys.readouterr().err)
    assert f":{file_port}/0" in line and "unreachable" in line
    monkeypatch.setenv("FRAMEWATCH_CONFIG", str(config))  # the variable names the file too
    line = _one_line_error(main(["index", "list"]), capsys.readouterr().err)
    assert f":{file_port}/0" in line
    monkeypatch.setenv("FRAMEWATCH_REDIS", f"redis://127.0.0.1:{env_port}/0")
    line = _one_line_error(main(["index", "list"]), capsys.readouterr().err)
    assert f":{env_port}/0" in line
    line = _one_line_error(
        main(["index", "list", "--redis", f"redis://127.0.0.1:{flag_port}/0"]), capsys.readouterr().err
    )
    assert f":{flag_port}/0" in line


@pytest.mark.parametrize(
    "text,expected",
    [('kafka = "a:1"\nnonsense = 1\n', "unknown key 'nonsense'"), ("kafka = [", "not valid TOML"),
     ('kafka = "a:1"\nkafka_security_protocol = "SASL_SSL"\n', "needs FRAMEWATCH_KAFKA_SASL_MECHANISM")],
)  # fmt: skip
def test_a_bad_config_file_is_one_line(tmp_path, capsys, text, expected):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    line = _one_line_error(main(["--config", str(config), "watch"]), capsys.readouterr().err)
    assert expected in line


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    line = _one_line_error(
        main(["index", "list", "--config", str(tmp_path / "nope.toml")]), capsys.readouterr().err
    )
    assert "does not exist" in line  # global flags may also follow the command


def test_redis_secrets_never_printed(capsys):
    """A password in the URL (after a raw @, or as ?password=) does not reach the error line."""
    port = free_port()
    for url, secret in [
        (f"redis://:p@ssw0rd-leak@127.0.0.1:{port}/0", "ssw0rd-leak"),
        (f"redis://127.0.0.1:{port}/0?password=hunter2-leak", "hunter2-leak"),
        (f"redis://admin:s3cret-leak@127.0.0.1:{port}/0", "s3cret-leak"),
    ]:
        line = _one_line_error(main(["index", "list", "--redis", url]), capsys.readouterr().err)
        assert secret not in line and "***" in line, line


def test_kafka_outage_is_one_json_log_line_not_a_flood():
    """kafka-python logs every failed reconnect; framewatch shows the first and holds back repeats.

    ``watch`` on a port where no broker listens retries for 30 s; whatever part of that we
    watch, stderr holds exactly one line about it, and with --log-format json it is JSON.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "framewatch.cli", "--log-format", "json", "watch", "--kafka", f"127.0.0.1:{free_port()}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        first = proc.stderr.readline()  # type: ignore[union-attr]
        entry = json.loads(first)
        assert entry["level"] in ("WARNING", "ERROR") and entry["logger"].startswith("kafka")
        assert entry["message"].startswith("Kafka connection trouble"), entry
        try:
            proc.wait(timeout=8)  # kafka-python retries several times a second meanwhile
        except subprocess.TimeoutExpired:
            pass
    finally:
        proc.kill()
        rest = proc.stderr.read()  # type: ignore[union-attr]
        proc.wait()
    more = [line for line in rest.splitlines() if line.strip()]
    assert all(not line.startswith("{") or "Kafka connection trouble" not in line for line in more), more
    assert all(json.loads(line)["logger"] != "kafka" for line in more if line.startswith("{")), more
    assert len(more) <= 1, more  # at most the final one-line error, if the 30 s bootstrap gave up


def test_fit_on_too_few_images_to_calibrate_is_refused(tmp_path, capsys):
    """One image (or k of them) cannot give a leave-one-out threshold: no silent threshold 0."""
    from tests.conftest import png_bytes

    (tmp_path / "only.png").write_bytes(png_bytes(0))
    closed = f"redis://127.0.0.1:{free_port()}/0"
    line = _one_line_error(
        main(["index", "fit", str(tmp_path), "--name", "x", "--redis", closed]), capsys.readouterr().err
    )
    assert "cannot calibrate a threshold" in line and "--holdout" in line
