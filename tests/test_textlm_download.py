"""``neuralengine download chessgpt-8``: Chess-GPT's checkpoints from a local HTTP server, never the internet.

The server (the one of test_download.py) serves the nanoGPT fixture
checkpoint under Chess-GPT's file name; it honours ``Range`` requests and can
cut a response short.
"""

from __future__ import annotations

from pathlib import Path

import chess
import pytest
from test_download import server  # noqa: F401  (the fixture)

from neuralengine.deepmind import resolve_weights
from neuralengine.download import main
from neuralengine.engine import Engine
from neuralengine.paths import CHESS_GPT_MODELS, downloaded_text_weights
from neuralengine.textlm import download as tdl
from neuralengine.weights import WeightsError, load_text_weights

pytest.importorskip("torch")

FIXTURE = Path(__file__).resolve().parent / "data" / "nanogpt" / "plain_bias" / "ckpt.pt"
NAME = "chessgpt-8"
FILE = CHESS_GPT_MODELS[NAME][1]


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("NEURALENGINE_CACHE", str(folder))
    monkeypatch.delenv(tdl.URL_ENV, raising=False)
    return folder


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args) + ["--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_urls_are_hugging_faces() -> None:
    assert tdl.checkpoint_url("chessgpt-16") == ("https://huggingface.co/adamkarvonen/chess_llms/resolve/main/"
                                                 "lichess_16layers_ckpt_no_optimizer.pt")
    assert tdl.checkpoint_url("chessgpt-8", "http://mirror/x/") == f"http://mirror/x/{FILE}"


def test_download_converts_and_the_name_then_opens_the_player(server, cache: Path, capsys) -> None:  # noqa: F811
    server.files[f"/checkpoints/{FILE}"] = FIXTURE.read_bytes()
    code, out, err = run(capsys, "ChessGPT-8", "--url", server.url)
    assert code == 0, err
    target = downloaded_text_weights(NAME)
    assert out.splitlines()[0] == str(target)
    assert "plain http://" in err and "pgn_lm, 2 layers × 32" in err
    weights = load_text_weights(target)
    assert weights.metadata["provenance"]["source"].startswith("Chess-GPT chessgpt-8")
    assert not list((cache / "chessgpt" / "downloads").glob("*.pt"))  # the checkpoint is deleted once converted
    assert resolve_weights(NAME) == target
    engine = Engine.open(NAME, warm_up=False)
    assert engine.kind == "pgn_lm" and engine.choose_move(chess.Board()).bestmove in chess.Board().legal_moves
    # A second run finds the conversion and asks the server for nothing.
    requests = len(server.requests)
    code, _, err = run(capsys, NAME, "--url", server.url)
    assert code == 0 and "already downloaded" in err and len(server.requests) == requests


def test_an_interrupted_download_resumes(server, cache: Path, capsys) -> None:  # noqa: F811
    body = FIXTURE.read_bytes()
    server.files[f"/checkpoints/{FILE}"] = body
    server.cut[f"/checkpoints/{FILE}"] = len(body) // 3
    code, _, err = run(capsys, NAME, "--url", server.url)
    assert code == 1 and "interrupted" in err and "resume" in err
    part = cache / "chessgpt" / "downloads" / (FILE + ".part")
    assert part.stat().st_size == len(body) // 3
    code, _, err = run(capsys, NAME, "--url", server.url, "--keep-archive")
    assert code == 0, err
    assert server.requests[-1] == (f"/checkpoints/{FILE}", f"bytes={len(body) // 3}-")
    assert (cache / "chessgpt" / "downloads" / FILE).read_bytes() == body
    load_text_weights(downloaded_text_weights(NAME))


def test_a_damaged_checkpoint_is_removed_and_explained(server, cache: Path, capsys) -> None:  # noqa: F811
    server.files[f"/checkpoints/{FILE}"] = b"PK\x03\x04 not really a checkpoint"
    code, _, err = run(capsys, NAME, "--url", server.url)
    assert code == 1 and "cannot be converted" in err and "download it again" in err
    assert "Traceback" not in err
    assert not (cache / "chessgpt" / "downloads" / FILE).exists()
    server.status[f"/checkpoints/{FILE}"] = 404
    code, _, err = run(capsys, NAME, "--url", server.url)
    assert code == 1 and "404" in err


def test_unknown_and_missing_names(cache: Path, capsys) -> None:
    code, _, err = run(capsys, "chessgpt-4")
    assert code == 2 and "chessgpt-8" in err and "270M" in err
    with pytest.raises(WeightsError, match="not downloaded yet: run 'neuralengine download chessgpt-16'"):
        resolve_weights("chessgpt-16")
