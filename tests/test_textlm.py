"""The ``pgn_lm`` kind: transcripts, the NumPy GPT and its prefix cache, the player, and UCI."""

from __future__ import annotations

import random
from pathlib import Path

import chess
import chess.engine
import numpy as np
import pytest

from neuralengine.config import ConfigError, TextModelConfig
from neuralengine.engine import Engine, SearchControl
from neuralengine.textlm.model import ContextError, TextLM, log_softmax
from neuralengine.textlm.player import TextLMEngine
from neuralengine.textlm.transcript import (
    CHESS_GPT_VOCABULARY,
    TranscriptError,
    Vocabulary,
    VocabularyError,
    candidate_texts,
    move_text,
    prefix,
    transcript,
)
from neuralengine.weights import WeightsError, load_text_weights, read_metadata, save_text_weights, \
    text_expected_shapes

RUY_LOPEZ = "e4 e5 Nf3 Nc6 Bb5 a6 Ba4 Nf6 O-O Be7".split()


def board_after(sans: list[str], board: chess.Board | None = None) -> chess.Board:
    board = board or chess.Board()
    for san in sans:
        board.push_san(san)
    return board


def random_text_model(folder: Path, *, block_size: int = 128, bias: bool = True, seed: int = 0,
                      name: str = "text") -> Path:
    cfg = TextModelConfig(n_layer=2, n_head=4, n_embd=32, block_size=block_size, vocabulary=CHESS_GPT_VOCABULARY,
                          bias=bias)
    rng = np.random.default_rng(seed)
    tensors = {}
    for key, shape in text_expected_shapes(cfg).items():
        if key.endswith("ln_1.weight") or key.endswith("ln_2.weight") or key.endswith("ln_f.weight"):
            tensors[key] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            tensors[key] = (0.3 * rng.standard_normal(shape)).astype(np.float32)
    return save_text_weights(folder / f"{name}.safetensors", cfg, tensors, provenance={"source": "random test"})


@pytest.fixture(scope="module")
def text_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_text_model(tmp_path_factory.mktemp("textlm"))


@pytest.fixture(scope="module")
def short_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A context of 40 characters: about six moves."""
    return random_text_model(tmp_path_factory.mktemp("textlm_short"), block_size=40, bias=False, seed=3,
                             name="short")


# --------------------------------------------------------------------------
# Transcripts
# --------------------------------------------------------------------------


def test_a_game_is_written_as_chess_gpt_writes_it() -> None:
    board = board_after(RUY_LOPEZ)
    assert transcript(board) == ";1.e4 e5 2.Nf3 Nc6 3.Bb5 a6 4.Ba4 Nf6 5.O-O Be7"
    assert transcript(board.move_stack[:3]) == ";1.e4 e5 2.Nf3"
    assert transcript(chess.Board()) == ";" and prefix(chess.Board()) == ";"
    assert prefix(board) == ";1.e4 e5 2.Nf3 Nc6 3.Bb5 a6 4.Ba4 Nf6 5.O-O Be7 "
    mate = board_after("f3 e5 g4 Qh4#".split())
    assert transcript(mate) == ";1.f3 e5 2.g4 Qh4#"


def test_each_move_adds_its_number_its_san_and_the_separator() -> None:
    start = chess.Board()
    assert move_text(start, chess.Move.from_uci("e2e4")) == "1.e4 "
    after = board_after(["e4"])
    assert move_text(after, chess.Move.from_uci("c7c5")) == "c5 "
    assert prefix(after) + move_text(after, chess.Move.from_uci("c7c5")) == ";1.e4 c5 "
    texts = candidate_texts(board_after(RUY_LOPEZ[:4]))
    assert texts.prefix == ";1.e4 e5 2.Nf3 Nc6 "
    assert sorted(texts.texts)[:3] == ["3.Ba6 ", "3.Bb5 ", "3.Bc4 "]
    assert all(t.startswith("3.") and t.endswith(" ") for t in texts.texts)


def test_short_castling_is_not_a_prefix_of_long_castling() -> None:
    board = chess.Board("r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1")
    texts = {m.uci(): move_text(board, m) for m in board.legal_moves}
    assert texts["e1g1"] == "1.O-O " and texts["e1c1"] == "1.O-O-O "
    assert not texts["e1c1"].startswith(texts["e1g1"])
    promotion = chess.Board("7k/4P3/8/8/8/8/8/K7 w - - 0 1")
    by_move = {m.uci(): move_text(promotion, m) for m in promotion.legal_moves}
    assert by_move["e7e8q"] == "1.e8=Q+ " and by_move["e7e8n"] == "1.e8=N "


def test_chess_gpt_encoding() -> None:
    vocab = Vocabulary()
    assert len(vocab) == 32
    assert vocab.encode(";1.e4 c5 2.N") == [15, 6, 4, 27, 9, 0, 25, 10, 0, 7, 4, 19]
    assert vocab.decode([6, 4, 27, 9, 0, 27, 10, 0, 7, 4, 19, 28]) == "1.e4 e5 2.Nf"
    with pytest.raises(VocabularyError, match="'z' is not in"):
        vocab.encode("1.z4")
    with pytest.raises(VocabularyError):
        Vocabulary(["a", "a"])


def test_a_game_from_a_fen_has_no_transcript() -> None:
    board = chess.Board("8/8/8/8/8/5k2/8/4K2R w K - 0 1")
    board.push_san("Kd2")
    with pytest.raises(TranscriptError, match="initial position"):
        transcript(board)
    cut = board_after(RUY_LOPEZ).copy(stack=3)  # a history cut short
    with pytest.raises(TranscriptError):
        prefix(cut)


def test_text_model_configs_are_checked() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        TextModelConfig(n_layer=1, n_head=3, n_embd=32, block_size=8, vocabulary=CHESS_GPT_VOCABULARY)
    with pytest.raises(ConfigError, match="single characters"):
        TextModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocabulary=("ab",))
    cfg = TextModelConfig(n_layer=8, n_head=8, n_embd=512, block_size=1023, vocabulary=CHESS_GPT_VOCABULARY)
    assert 25_000_000 < cfg.num_parameters() < 26_000_000  # Chess-GPT's 8-layer model: about 25 M


# --------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------


def test_the_prefix_cache_gives_the_logits_of_one_whole_pass(text_weights: Path) -> None:
    model = TextLM.load(text_weights)
    vocab = Vocabulary()
    ids = vocab.encode(";1.e4 e5 2.Nf3 Nc6 3.Bb5 a6")
    whole = model.forward([ids], residuals=True)
    cache, last = model.read(ids[:10])
    rest = model.forward([ids[10:]], cache, keep_cache=True)
    np.testing.assert_allclose(rest.logits[0], whole.logits[0, 10:], atol=2e-5)
    np.testing.assert_allclose(last, whole.logits[0, 9], atol=2e-5)
    assert rest.cache is not None and rest.cache.length == len(ids)
    # The residual stream: after the embedding and after each block; the last one gives the logits.
    assert len(whole.residuals) == 3 and whole.residuals[0].shape == (1, len(ids), 32)
    final = model._layer_norm(whole.residuals[-1], model.ln_f) @ model.head
    np.testing.assert_allclose(final, whole.logits, atol=1e-5)


def test_every_move_is_scored_in_one_batch_as_in_separate_passes(text_weights: Path) -> None:
    model = TextLM.load(text_weights)
    vocab = Vocabulary()
    board = board_after(RUY_LOPEZ[:5])
    texts = candidate_texts(board)
    start = vocab.encode(texts.prefix)
    cache, last = model.read(start)
    batched = model.score(cache, last, [vocab.encode(t) for t in texts.texts])
    for text, value in zip(texts.texts, batched):
        ids = start + vocab.encode(text)
        logp = log_softmax(model.forward([ids[:-1]]).logits[0])
        alone = sum(logp[i - 1, ids[i]] for i in range(len(start), len(ids)))
        assert value == pytest.approx(alone, abs=1e-4)
    with pytest.raises(ContextError, match="context"):
        model.forward([[0] * 129])


def test_text_model_files_are_told_apart(text_weights: Path, tmp_path: Path) -> None:
    meta = read_metadata(text_weights)
    assert meta["architecture"]["kind"] == "pgn_lm" and "actions_sha256" not in meta
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(text_weights.read_bytes()[:-100])
    with pytest.raises(WeightsError, match="truncated"):
        load_text_weights(broken)


# --------------------------------------------------------------------------
# The player
# --------------------------------------------------------------------------


def test_the_player_plays_the_most_probable_legal_move(text_weights: Path) -> None:
    engine = Engine.open(text_weights, warm_up=False)
    assert isinstance(engine, TextLMEngine) and engine.kind == "pgn_lm"
    assert "pgn_lm, 2 layers x 32" in engine.describe() and "fallback neuralengine.safetensors" in engine.describe()
    board = board_after(RUY_LOPEZ)
    scores = engine.log_probs(board)
    choice = engine.choose_move(board)
    assert choice.bestmove == max(scores, key=scores.get)
    assert choice.nodes == board.legal_moves.count() == len(choice.ranked)
    assert sum(s.win_prob for s in choice.ranked) == pytest.approx(1.0)
    assert [s.win_prob for s in choice.ranked] == sorted((s.win_prob for s in choice.ranked), reverse=True)
    assert board.move_stack == board_after(RUY_LOPEZ).move_stack  # the game is left as it was


def test_the_next_move_of_a_game_reads_only_the_new_characters(text_weights: Path) -> None:
    engine = TextLMEngine(TextLM.load(text_weights))
    board = board_after(RUY_LOPEZ[:6])
    first = engine.log_probs(board)
    board.push_san("Ba4")
    tokens = Vocabulary().encode(prefix(board))
    assert engine.prefixes.uncached(tokens) == len("4.Ba4 ")  # only the characters the move added
    cached = engine.log_probs(board)
    fresh = TextLMEngine(TextLM.load(text_weights)).log_probs(board)
    assert cached.keys() == fresh.keys()
    for move in cached:
        assert cached[move] == pytest.approx(fresh[move], abs=1e-4)
    board.pop()
    again = engine.log_probs(board)  # back to an earlier position: the cache is cut, not wrong
    for move in first:
        assert again[move] == pytest.approx(first[move], abs=1e-4)


def test_a_position_without_transcript_goes_to_the_fallback_model(text_weights: Path) -> None:
    engine = Engine.open(text_weights, warm_up=False)
    board = chess.Board("r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3")
    choice = engine.choose_move(board)
    assert choice.bestmove in board.legal_moves
    assert choice.notes and "no transcript" in choice.notes[0] and "fallback model" in choice.notes[0]
    assert choice.ranked and choice.nodes == board.legal_moves.count()  # the fallback model scored every move


def test_a_game_longer_than_the_context_goes_to_the_fallback_model(short_weights: Path) -> None:
    engine = Engine.open(short_weights, warm_up=False)
    board = chess.Board()
    notes = []
    for _ in range(30):
        choice = engine.choose_move(board)
        assert choice.bestmove in board.legal_moves
        notes.extend(choice.notes)
        board.push(choice.bestmove)
        if board.is_game_over():
            break
    assert any("longer than the model's context of 40 characters" in n for n in notes)
    assert len(prefix(board)) > 40


def test_without_a_fallback_model_the_static_move_is_played(text_weights: Path) -> None:
    engine = TextLMEngine(TextLM.load(text_weights), fallback=None)
    board = chess.Board("4k3/8/8/8/8/8/4P3/4K3 w - - 0 1")
    choice = engine.choose_move(board)
    assert choice.bestmove in board.legal_moves
    assert choice.fallback and "no fallback model" in choice.fallback


def test_temperature_searchmoves_and_the_mate_rule(text_weights: Path) -> None:
    engine = TextLMEngine(TextLM.load(text_weights), fallback=None, temperature=1.0, seed=7)
    board = board_after(RUY_LOPEZ[:4])
    drawn = {engine.choose_move(board).bestmove for _ in range(30)}
    assert len(drawn) > 1 and all(m in board.legal_moves for m in drawn)
    engine.rng = random.Random(7)
    again = TextLMEngine(TextLM.load(text_weights), fallback=None, temperature=1.0, seed=7)
    assert [engine.choose_move(board).bestmove for _ in range(5)] == [again.choose_move(board).bestmove
                                                                      for _ in range(5)]
    engine.temperature = 0.0
    only = [chess.Move.from_uci("a2a3"), chess.Move.from_uci("h2h4")]
    assert engine.choose_move(board, searchmoves=only).bestmove in only
    mate = board_after("f3 e5 g4".split())
    choice = engine.choose_move(mate)
    assert choice.bestmove == chess.Move.from_uci("d8h4") and choice.ranked[0].rule == "mate"


def test_the_unmasked_move_is_the_models_own_text(text_weights: Path) -> None:
    engine = TextLMEngine(TextLM.load(text_weights), fallback=None)
    board = board_after(RUY_LOPEZ[:4])
    text, move = engine.unmasked_move(board)
    assert 1 <= len(text) <= 16
    if move is not None:  # a legal move: its text is the move's own
        assert text.strip().endswith(board.san(move)) and text.endswith(" ")
    with pytest.raises(ValueError, match="no transcript"):
        engine.unmasked_move(chess.Board("4k3/8/8/8/8/8/4P3/4K3 w - - 0 1"))


def test_ponder_predicts_the_models_own_reply(text_weights: Path) -> None:
    engine = TextLMEngine(TextLM.load(text_weights), fallback=None)
    board = board_after(RUY_LOPEZ[:4])
    choice = engine.choose_move(board, ponder=True)
    board.push(choice.bestmove)
    assert choice.ponder == engine.choose_move(board).bestmove
    assert choice.ponder in board.legal_moves


def test_no_time_plays_a_legal_move_at_once(text_weights: Path) -> None:
    engine = TextLMEngine(TextLM.load(text_weights), fallback=None)
    engine.warm_up()
    assert engine.latency.known and engine.evaluation_seconds(30) > 0
    board = board_after(RUY_LOPEZ)
    assert engine.predicted_seconds(board) > 0
    control = SearchControl()
    control.stop.set()
    choice = engine.choose_move(board, control=control)
    assert choice.bestmove in board.legal_moves and choice.fallback


# --------------------------------------------------------------------------
# UCI
# --------------------------------------------------------------------------


def info_strings(infos: list[dict]) -> list[str]:
    return [i["string"] for i in infos if "string" in i]


def test_uci_plays_the_game_and_says_when_it_has_no_transcript(engine_command: list[str], text_weights: Path,
                                                               short_weights: Path) -> None:
    engine = chess.engine.SimpleEngine.popen_uci(engine_command, timeout=60)
    try:
        engine.configure({"WeightsFile": str(text_weights)})
        board = board_after(RUY_LOPEZ)
        expected = TextLMEngine(TextLM.load(text_weights), fallback=None).choose_move(board).bestmove
        result = engine.play(board, chess.engine.Limit(time=5), info=chess.engine.INFO_ALL)
        assert result.move == expected
        assert not any("transcript" in s for s in info_strings([result.info]))
        fen_board = chess.Board("r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3")
        with engine.analysis(fen_board, chess.engine.Limit(time=5)) as analysis:
            infos = list(analysis)
        assert any("no transcript" in s and "fallback model" in s for s in info_strings(infos))
        assert analysis.wait().move in fen_board.legal_moves
        engine.configure({"WeightsFile": str(short_weights)})
        long_game = board_after(RUY_LOPEZ)  # 47 characters: more than a context of 40
        with engine.analysis(long_game, chess.engine.Limit(time=5)) as analysis:
            infos = list(analysis)
        assert any("longer than the model's context" in s for s in info_strings(infos))
        assert analysis.wait().move in long_game.legal_moves
    finally:
        engine.quit()


# --------------------------------------------------------------------------
# analyse, bench, puzzles, match
# --------------------------------------------------------------------------

PUZZLES_WITH_GAMES = Path(__file__).resolve().parent / "data" / "puzzles_with_games.csv"


def test_analyse_ranks_the_moves_of_a_game(text_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from neuralengine.analyse import main

    assert main(["--weights", str(text_weights), "--moves", "e2e4", "e7e5", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "pgn_lm" in out and "policy %" in out and len([l for l in out.splitlines() if l[:4].strip().isdigit()]) == 3
    assert main(["--weights", str(text_weights), "--fen", "4k3/8/8/8/8/8/4P3/4K3 w - - 0 1"]) == 0
    assert "no transcript" in capsys.readouterr().out


def test_bench_plays_the_text_models_own_game(text_weights: Path) -> None:
    from neuralengine.benchmarks.speed import bench_backend
    from neuralengine.benchmarks.suite import load_suite

    result = bench_backend(text_weights, "onnx", load_suite()[:12], passes=1)
    assert len(result.times) == 12 and all(n >= 1 for n in result.nodes)
    assert result.model["kind"] == "pgn_lm" and result.groups[0] == "plies 0-19"
    assert result.to_dict()["positions_per_s"] > 0


def test_puzzles_give_the_game_and_skip_those_without(text_weights: Path, engine_command: list[str], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import shlex

    from neuralengine.benchmarks import puzzles as pz

    puzzles, skipped = pz.read_puzzles(PUZZLES_WITH_GAMES)
    assert not skipped and [len(p.game) for p in puzzles] == [2, 5, 5, 0]
    seen: list[chess.Board] = []

    def source(board: chess.Board) -> chess.Move:
        seen.append(board.copy())
        return chess.Move.from_uci(puzzles[1].moves[1])

    assert pz.solve(puzzles[1], source).solved
    assert transcript(seen[0]) == ";1.e4 e5 2.Bc4 Nc6 3.Qh5 Nf6"
    out = tmp_path / "out"
    code = pz.main([str(PUZZLES_WITH_GAMES), "--weights", str(text_weights), "--engine", shlex.join(engine_command),
                    "--movetime", "2", "--out", str(out), "--quiet"])
    assert code == 0
    assert "1 puzzles skipped: a text model (pgn_lm) reads the game" in capsys.readouterr().err
    report = json.loads((out / "puzzles.json").read_text())
    assert report["skipped_without_game"] == 1
    assert report["accuracy"]["overall"]["puzzles"] == 3
    assert report["accuracy"]["overall"]["solved"] == 3  # mates in one: the mate rule plays them


def test_a_puzzle_whose_game_does_not_reach_its_fen_is_skipped(tmp_path: Path) -> None:
    from neuralengine.benchmarks import puzzles as pz

    lines = PUZZLES_WITH_GAMES.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], lines[1].replace("f2f3 e7e5", "f2f3 e7e6"),
                              lines[2].replace("3. Qh5", "3. Qz9")]) + "\n")
    puzzles, skipped = pz.read_puzzles(bad)
    assert not puzzles
    assert "not to the puzzle's FEN" in skipped[0] and "'Qz9' is not legal" in skipped[1]


def test_the_built_in_openings_as_games_reach_the_same_positions() -> None:
    from neuralengine.benchmarks.openings import BUILTIN_OPENINGS, BUILTIN_PGN_OPENINGS, load_openings

    positions = load_openings(BUILTIN_OPENINGS)
    games = load_openings(BUILTIN_PGN_OPENINGS)
    assert len(games) == len(positions) == 100
    for game, position in zip(games, positions):
        assert game.fen == chess.STARTING_FEN and game.name == position.name
        assert game.board().epd() == chess.Board(position.fen).epd()
        transcript(game.board())  # each has a transcript


@pytest.mark.slow
def test_match_plays_the_text_model_from_the_initial_position(text_weights: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from neuralengine.benchmarks import match

    out = tmp_path / "match"
    code = match.main(["--weights", str(text_weights), "--random-mover", "--games", "2", "--tc", "20+0.2",
                       "--tool", "builtin", "--max-moves", "30", "--out", str(out), "--quiet"])
    assert code == 0
    assert "played from the initial position (openings.pgn)" in capsys.readouterr().err
    report = json.loads((out / "match.json").read_text())
    assert report["settings"]["openings"] == "openings.pgn"
    games = (out / "games.pgn").read_text()
    assert games.count("[Result") == 2 and "[FEN" not in games  # the games start from the initial position
