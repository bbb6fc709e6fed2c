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
