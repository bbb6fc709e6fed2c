"""Our own text model: games as transcripts (datagen --pgn), the pgn_lm trainer, and probes on text models."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import chess
import chess.pgn
import numpy as np
import pytest

from neuralengine.data.transcripts import TranscriptGame, TranscriptWriter, parse_line, read_transcripts
from neuralengine.textlm.transcript import transcript

torch = pytest.importorskip("torch")

from neuralengine.research.text_probe import (  # noqa: E402
    build_text_features,
    load_games,
    parse_transcript,
    reading_sites,
)
from neuralengine.train.pgn_lm import GPT, GPTConfig, encode, load_any, main as train_main  # noqa: E402

SAMPLE = Path(__file__).parent / "data" / "pgn_lm"
TINY = ["--layers", "2", "--dim", "32", "--heads", "2", "--block-size", "512", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for a few steps on the committed sample."""
    run = tmp_path_factory.mktemp("pgn-run")
    code = train_main(["--data", str(SAMPLE), "--out", str(run), "--steps", "30", "--batch-chars", "2048",
                       "--eval-every", "15", "--checkpoint-every", "15", "--log-every", "5", "--lr", "1e-2",
                       "--warmup", "5", *TINY])
    assert code == 0
    return run


# --- transcripts -------------------------------------------------------------


def test_transcript_lines_round_trip(tmp_path):
    moves = [chess.Move.from_uci(m) for m in ("e2e4", "e7e5", "g1f3", "b8c6", "f1b5")]
    writer = TranscriptWriter(tmp_path, test_fraction=0.0, resume=False)
    writer.add_game("g1", chess.STARTING_FEN, [m.uci() for m in moves], "*", "max_plies",
                    ("skill 3", "elo 1500"), (1602, 1500))
    writer.close()
    [game] = list(read_transcripts([tmp_path / "train.txt"]))
    assert game == TranscriptGame("g1", 1602, 1500, "*", ";1.e4 e5 2.Nf3 Nc6 3.Bb5")
    assert parse_transcript(game.text) == moves
    pgn = chess.pgn.read_game(open(tmp_path / "train.pgn", encoding="utf-8"))
    assert pgn.headers["WhiteElo"] == "1602" and pgn.headers["GameId"] == "g1"
    assert list(pgn.mainline_moves()) == moves
    assert (tmp_path / "test.txt").read_text() == ""
    assert parse_line("not a transcript\n") is None
    assert parse_line("g\t-\t-\t*\t;1.e4\n") == TranscriptGame("g", None, None, "*", ";1.e4")


def test_resume_drops_a_cut_line_and_knows_the_games(tmp_path):
    writer = TranscriptWriter(tmp_path, 0.0, resume=False)
    writer.add_game("a", chess.STARTING_FEN, ["d2d4"], "*", "x", ("s", "s"), (1400, 1400))
    writer.close()
    with open(tmp_path / "train.txt", "a") as fh:
        fh.write("b\t1400\t1400\t*\t;1.e")  # killed mid-line
    again = TranscriptWriter(tmp_path, 0.0, resume=True)
    again.close()
    assert again.games_seen == {"a"}
    assert (tmp_path / "train.txt").read_text().count("\n") == 1


def test_committed_sample_replays():
    games = list(read_transcripts([SAMPLE / "train.txt", SAMPLE / "test.txt"]))
    assert len(games) == 50
    for g in games:
        assert transcript(parse_transcript(g.text)) == g.text
        assert g.white_elo is not None and g.black_elo is not None


@pytest.mark.slow
def test_datagen_pgn_plays_games_with_strengths(tmp_path, stockfish_path):
    from neuralengine.data.datagen import main

    out = tmp_path / "games"
    argv = ["--pgn", "--games", "3", "--out", str(out), "--nodes", "200", "--max-plies", "30", "--policies",
            "skill,elo", "--test-fraction", "0", "--workers", "1", "--stockfish", stockfish_path, "--quiet"]
    assert main(argv) == 0
    games = list(read_transcripts([out / "train.txt"]))
    assert [g.game_id for g in games] == ["sp0-000000", "sp0-000001", "sp0-000002"]
    for g in games:
        moves = parse_transcript(g.text)
        assert 0 < len(moves) <= 30
        assert 1340 <= g.white_elo <= 2950 and 1340 <= g.black_elo <= 2950
    pgns = []
    with open(out / "train.pgn", encoding="utf-8") as fh:
        while (game := chess.pgn.read_game(fh)) is not None:
            pgns.append(game)
    assert [transcript(list(p.mainline_moves())) for p in pgns] == [g.text for g in games]
    meta = json.loads((out / "datagen.json").read_text())
    assert meta["games"] == {"train": 3, "test": 0}
    # resuming with more games plays only the new one
    assert main(argv[:2] + ["4"] + argv[3:] + ["--resume"]) == 0
    assert len(list(read_transcripts([out / "train.txt"]))) == 4
    # --pgn refuses input files
    assert main(["--pgn", "--out", str(tmp_path / "x"), str(SAMPLE / "train.txt")]) == 2


# --- the trainer ---------------------------------------------------------------


def test_training_lowers_the_loss_and_writes_a_model_the_engine_reads(tiny_run):
    from neuralengine.textlm.model import TextLM

    rows = list(csv.DictReader(open(tiny_run / "metrics.csv")))
    losses = [float(r["train_loss"]) for r in rows if r["train_loss"]]
    assert losses[-1] < losses[0] - 0.5
    assert [r["step"] for r in rows if r["test_loss"]] == ["15", "30"]
    assert (tiny_run / "metrics.png").exists()
    engine = TextLM.load(tiny_run / "model.safetensors")
    net = load_any(tiny_run)
    tokens = encode(";1.e4 e5 2.Nf3 Nc6 3.Bb5 a6 4.")
    got = engine.forward([tokens]).logits
    want = net(torch.tensor([tokens])).detach().numpy()
    assert np.abs(got - want).max() < 1e-5
    assert load_any(tiny_run / "model.safetensors").state_dict().keys() == net.state_dict().keys()


def test_resume_continues_from_the_checkpoint(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = json.loads((run / "checkpoint.json").read_text())
    assert before["step"] == 30
    code = train_main(["--data", str(SAMPLE), "--out", str(run), "--steps", "40", "--batch-chars", "2048",
                       "--eval-every", "10", "--checkpoint-every", "10", "--log-every", "5", *TINY])
    assert code == 0
    steps = [int(r["step"]) for r in csv.DictReader(open(run / "metrics.csv"))]
    assert steps == sorted(set(steps)) and steps[-1] == 40 and 35 in steps
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 40
    # another architecture in the same folder is refused
    assert train_main(["--data", str(SAMPLE), "--out", str(run), "--layers", "3", "--dim", "32", "--heads", "2",
                       "--block-size", "512", "--quiet"]) == 2


def test_export_and_bad_options(tiny_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "model.safetensors").unlink()
    assert train_main(["--out", str(run), "--export"]) == 0
    assert (run / "model.safetensors").exists()
    assert train_main(["--out", str(tmp_path / "empty"), "--export"]) == 2
    assert train_main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert train_main(["--data", str(SAMPLE), "--out", str(tmp_path / "o"), "--dim", "30", "--heads", "4"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint.safetensors" in err and "no such file" in err and "multiple of --heads" in err


def test_the_cached_path_computes_what_the_full_pass_computes():
    torch.manual_seed(0)
    net = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=64)).eval()
    tokens = torch.tensor([encode(";1.e4 e5 2.Nf3 Nc6 3.")])
    with torch.no_grad():
        full = net(tokens)
        _, past = net.extend(tokens[:, :10])
        rest, _ = net.extend(tokens[:, 10:].expand(3, -1), past)
    assert torch.allclose(rest, full[:, 10:].expand(3, -1, -1), atol=1e-5)


def test_train_command_dispatches_pgn_lm(tiny_run, capsys):
    from neuralengine.train.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["pgn_lm", "--help"])
    assert exc.value.code == 0
    assert "move transcripts" in capsys.readouterr().out


# --- probes on text models -------------------------------------------------------


def test_reading_sites_are_the_dots_with_the_board_before_whites_move():
    moves = parse_transcript(";1.e4 e5 2.Nf3 Nc6 3.Bb5")
    from neuralengine.research.text_probe import TextGame

    text, sites = reading_sites(TextGame("g", moves, (1500, 1700)), 1023, "dot")
    assert text == ";1.e4 e5 2.Nf3 Nc6 3.Bb5"
    assert [s.index for s in sites] == [2, 10, 20]
    assert all(text[s.index] == "." for s in sites)
    assert sites[1].board.fen().startswith("rnbqkbnr/pppp1ppp/8/4p3/4P3/8/PPPP1PPP/RNBQKBNR w")
    assert {s.elo for s in sites} == {1500}
    _, both = reading_sites(TextGame("g", moves, (1500, 1700)), 1023, "both")
    black = [s for s in both if s.board.turn == chess.BLACK]
    assert [s.index for s in black] == [5, 14] and all(text[s.index] == " " for s in black)
    assert {s.elo for s in black} == {1700}
    # sites past the context are left out
    _, short = reading_sites(TextGame("g", moves, (1500, 1700)), 12, "dot")
    assert [s.index for s in short] == [2, 10]


def test_features_frame_the_board_for_the_player_to_move():
    games = load_games([SAMPLE / "train.txt"], 4)
    samples = [s for g in games for s in reading_sites(g, 1023, "both")[1]]
    train = np.arange(len(samples))
    feats, skipped = build_text_features(samples, train, ["piece3", "piece13", "strength"], "both")
    names = [f.name for f in feats]
    assert names == ["dot:piece3", "dot:piece13", "dot:piece13_colour", "dot:strength"] and not skipped
    p3, p13, colour = feats[0].labels, feats[1].labels, feats[2].labels
    first_black = next(i for i, s in enumerate(samples) if s.board.turn == chess.BLACK)
    # white's e1 king is "mine" when white is to move and "theirs" when black is
    assert p3[0, chess.E1] == 1 and p3[first_black, chess.E1] == 2
    assert p13[0, chess.E1] == 6 and p13[first_black, chess.E1] == 12 and colour[first_black, chess.E1] == 6
    assert set(np.unique(feats[3].labels)) == {0, 1}


@pytest.mark.slow
def test_probe_command_on_a_text_model(tiny_run, tmp_path, capsys):
    from neuralengine.research.command import main

    out = tmp_path / "probes"
    code = main([str(SAMPLE / "train.txt"), str(SAMPLE / "test.txt"), "--weights", str(tiny_run / "model.safetensors"),
                 "--positions", "240", "--per-game", "6", "--intervene", "4", "--intervene-layers", "1,2",
                 "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "probes.json").read_text())
    assert report["kind"] == "pgn_lm"
    assert report["layers"] == ["embedding", "block 1", "block 2"]
    assert set(report["features"]) == {"dot:piece3", "dot:piece13", "dot:strength"}
    for key in ("trained", "random"):
        assert all(0 <= v <= 1 for f in report["results"][key].values() for v in f)
    assert report["data"]["train_games"] > 0 and report["data"]["test_games"] > 0
    inter = report["intervention"]
    assert inter["positions"] == 4 and set(inter["layers"]) == {"1", "2"}
    for row in inter["layers"].values():
        assert row["norm"]["relative_step"]["probe"] == pytest.approx(0.25)
        assert row["norm"]["relative_step"]["random"] == pytest.approx(0.25)
        assert 0 <= row["margin"]["top_move_changed"]["probe"] <= 1
    assert (out / "probes.png").exists()
    printed = capsys.readouterr().out
    assert "dot:piece3" in printed and "top move changed" in printed


def test_probe_refuses_board_features_for_a_text_model(tiny_run, tmp_path, capsys):
    from neuralengine.research.command import main

    code = main([str(SAMPLE / "train.txt"), "--weights", str(tiny_run / "model.safetensors"), "--features", "move",
                 "--out", str(tmp_path / "p"), "--quiet"])
    assert code == 1
    assert "piece3, piece13, strength" in capsys.readouterr().err
