"""``index fit --from-topic`` and ``index recalibrate`` refuse incomplete command lines in one line, before any work."""

from __future__ import annotations

import pytest

from framewatch.cli import main


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["index", "fit", "--name", "x"], "needs a folder of normal images, or --from-topic"),
        (["index", "fit", "--name", "x", "--from-topic", "--since", "1h"], "needs --source CAM"),
        (
            ["index", "fit", "--name", "x", "--from-topic", "--source", "cam"],
            "needs --since DURATION or --last N",
        ),
        (["index", "recalibrate", "x", "--source", "cam"], "needs --since DURATION or --last N"),
    ],
)
def test_incomplete_stream_commands_fail_with_one_line(argv, says, capsys):  # type: ignore[no-untyped-def]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("framewatch: error: ") and says in err[0], err


@pytest.mark.parametrize("bad", ["0", "1.5.2h", "soon", "5y"])
def test_a_bad_duration_stops_at_parse_time(bad, capsys):  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as stop:
        main(["index", "fit", "--name", "x", "--from-topic", "--source", "cam", "--since", bad])
    assert stop.value.code == 2 and "duration" in capsys.readouterr().err


def test_since_and_last_exclude_each_other(capsys):  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit):
        main(
            ["index", "fit", "--name", "x", "--from-topic", "--source", "cam", "--since", "1h", "--last", "5"]
        )
    assert "not allowed with argument" in capsys.readouterr().err
