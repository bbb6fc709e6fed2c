"""``neuralengine COMMAND --help``: every command's help text as a person reads it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from neuralengine.cli import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_single_percent_signs(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """argparse expands ``%%`` only in the texts it formats (argument help, usage), not in a
    description, so a doubled sign written in the wrong place reaches the reader as "win %%"."""
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code in (0, None)
    out = capsys.readouterr().out
    assert f"neuralengine {command}" in out or command == "uci"
    assert "%%" not in out, [line for line in out.splitlines() if "%%" in line]


def test_analyse_help_says_win_percent(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["analyse", "--help"])
    assert "win % and centipawns" in " ".join(capsys.readouterr().out.split())


def test_a_closed_pipe_ends_the_output_quietly() -> None:
    """``neuralengine analyse | head -1`` where the reader is gone before the
    output comes: the command stops without a traceback."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    proc = subprocess.Popen([sys.executable, "-m", "neuralengine", "analyse", "--top", "20"],
                            stdout=write, stderr=subprocess.PIPE, text=True)
    os.close(write)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 1


def test_ctrl_c_outside_a_commands_own_handling_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A KeyboardInterrupt that reaches the dispatcher (Ctrl-C while a command's modules
    load) ends with exit 130 and one line instead of a traceback."""
    import types

    import neuralengine.cli as cli

    interrupted = types.ModuleType("interrupted_command")

    def interrupted_main(argv: list[str]) -> int:
        raise KeyboardInterrupt

    interrupted.main = interrupted_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "interrupted_command", interrupted)
    monkeypatch.setitem(cli.COMMANDS, "interrupted", ("interrupted_command", "a command stopped by Ctrl-C"))
    assert cli.main(["interrupted"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "neuralengine interrupted: interrupted"
