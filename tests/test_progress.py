"""The progress bar: tqdm underneath, one line per refresh when stderr is not a terminal."""

from __future__ import annotations

import pytest

from neuralengine.progress import Progress


def test_counts_and_draws_lines_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    bar = Progress("annotate", total=4, unit="pos", every=0)
    for i in range(4):
        bar.update(1, postfix=f"{i} AV/s")
    assert bar.count == 4
    bar.count -= 1  # the annotator takes back lost work this way
    assert bar.count == 3
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("annotate:") for line in lines)
    assert "\r" not in "".join(lines)
    assert any("4/4" in line and "pos/s" in line and "3 AV/s" in line for line in lines)


def test_bytes_with_a_resumed_start(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress("9M.zip", total=4 << 20, data=True, initial=1 << 20, every=0) as bar:
        bar.update(1 << 20)
        assert bar.count == 2 << 20
    err = capsys.readouterr().err
    assert "2.00M/4.00M" in err and "B/s" in err


def test_disabled_bar_prints_nothing_but_counts(capsys: pytest.CaptureFixture[str]) -> None:
    bar = Progress("train", total=10, unit="steps", enabled=False)
    bar.count = 5
    bar.update(2, postfix="loss 1.0")
    bar.close()
    assert bar.count == 7
    assert capsys.readouterr().err == ""
