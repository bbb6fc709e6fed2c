"""The language-model player over HTTP, against a fake OpenAI-compatible server in this process."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading

import chess
import chess.engine
import pytest

from fake_llm import FakeLlm
from neuralengine.engine import MoveChoice, SearchControl
from neuralengine.textlm.http import (
    DEFAULT_TAGS,
    HttpLlmPlayer,
    LlmSettings,
    continuation,
    movetext,
    pgn_prompt,
    read_move,
)
from neuralengine.textlm.http_client import CompletionsClient, LlmHttpError, base_url, public_url

SECRET = "sk-test-7f3a9c1e-never-show-me"
TAGS = "\n".join(f'[{name} "{value}"]' for name, value in DEFAULT_TAGS)


def board_after(*uci: str, fen: str | None = None) -> chess.Board:
    board = chess.Board() if fen is None else chess.Board(fen)
    for text in uci:
        board.push_uci(text)
    return board


def player(fake: FakeLlm, *, fallback: object = None, environ: dict[str, str] | None = None,
           **settings: object) -> HttpLlmPlayer:
    return HttpLlmPlayer(fake.url, LlmSettings(**settings), fallback=fallback,  # type: ignore[arg-type]
                         environ={} if environ is None else environ)


# -- the text ----------------------------------------------------------------------


def test_prompt_is_tags_blank_line_and_numbered_moves():
    assert pgn_prompt(chess.Board()) == TAGS + "\n\n1."
    assert pgn_prompt(board_after("e2e4")) == TAGS + "\n\n1. e4"
    assert pgn_prompt(board_after("e2e4", "e7e5", "g1f3")) == TAGS + "\n\n1. e4 e5 2. Nf3"
    assert pgn_prompt(board_after("e2e4", "e7e5", "g1f3", "b8c6")) == TAGS + "\n\n1. e4 e5 2. Nf3 Nc6 3."


def test_prompt_from_a_fen_has_setup_tags_and_black_move_numbers():
    fen = "r3k2r/8/8/8/8/8/8/R3K2R b KQkq - 3 17"
    board = board_after(fen=fen)
    assert pgn_prompt(board) == TAGS + f'\n[SetUp "1"]\n[FEN "{fen}"]\n\n17...'
    board.push_uci("e8g8")
    assert movetext(board.root(), board.move_stack) == "17... O-O 18."
    board.push_uci("e1c1")
    assert pgn_prompt(board).endswith('\n\n17... O-O 18. O-O-O')


def test_prompt_never_ends_in_whitespace_over_a_whole_game():
    board = chess.Board()
    for _ in range(60):
        text = pgn_prompt(board)
        assert text == text.rstrip() and not text.endswith(" ")
        moves = sorted(board.legal_moves, key=lambda m: m.uci())
        if not moves:
            break
        board.push(moves[len(board.move_stack) * 7 % len(moves)])


def test_continuation_carries_the_separator():
    board = board_after(fen="r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 9")
    assert continuation(board, chess.Move.from_uci("e1g1")) == " O-O "
    assert continuation(board, chess.Move.from_uci("e1c1")) == " O-O-O "
    board.push_uci("e1g1")
    assert continuation(board, chess.Move.from_uci("e8c8")) == " O-O-O 10."


@pytest.mark.parametrize("text, san", [
    (" Nf3 Nc6 3. Bb5", "Nf3"), ("2. Nf3", "Nf3"), ("2.Nf3", "Nf3"), ("\n  Nf3!?", "Nf3"), (" Nf3+", "Nf3"),
    (" 1-0", None), (" Ke9", None), ("", None), ("   ", None), (" nf3", None), (" Nf3.", "Nf3"),
])
def test_read_move(text, san):
    board = board_after("e2e4", "e7e5")
    move, _ = read_move(board, text)
    assert (None if move is None else board.san(move)) == san


def test_read_move_accepts_zeros_for_castling_and_searches_chat_answers():
    board = board_after(fen="r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 9")
    assert read_move(board, " 0-0-0")[0] == chess.Move.from_uci("e1c1")
    answer = "The best move here is O-O, castling short."
    assert read_move(board, answer)[0] is None
    assert read_move(board, answer, search=True)[0] == chess.Move.from_uci("e1g1")


def test_urls_are_shown_without_their_secrets():
    assert base_url("http://h:8000/v1/completions") == "http://h:8000/v1"
    assert base_url("http://h:8000/v1/chat/completions/") == "http://h:8000/v1"
    assert public_url("https://user:pw@api.example.com/v1?key=abc") == "https://api.example.com/v1"
    client = CompletionsClient("https://api.example.com/v1?key=abc", api_key=SECRET)
    shown = client.redact(f"failed with {SECRET} at key=abc")
    assert SECRET not in shown and "key=abc" not in shown
    for bad in ("ftp://example.com/v1", "http://", "http://[::1/v1", "https://host:99999/v1",
                "http://user:secretpw@/v1"):
        with pytest.raises(ValueError) as error:
            CompletionsClient(bad)
        assert "secretpw" not in str(error.value)
    with pytest.raises(ValueError, match="carries a user or password; give the API key in NEURALENGINE_LLM_API_KEY"):
        CompletionsClient("https://me:secretpw@api.example.com/v1")


# -- scoring -----------------------------------------------------------------------


def test_scoring_sends_every_legal_move_in_one_request_and_plays_the_likeliest():
    board = board_after("e2e4", "e7e5")
    with FakeLlm(favourites=[TAGS + "\n\n1. e4 e5 2. Nf3 "]) as fake:
        llm = player(fake)
        choice = llm.choose_move(board)
        probe, post = fake.posts("/v1/completions")
        assert len(llm.choose_move(board_after("e2e4", "e7e5", "g1f3", "b8c6")).ranked) > 0
    assert len(fake.posts("/v1/completions")) == 3  # auto mode asks once whether the server echoes
    assert board.san(choice.bestmove) == "Nf3"
    assert probe["echo"] is True and probe["max_tokens"] == 1 and probe["prompt"] == TAGS + "\n\n1. e4 e5 2."
    assert post["echo"] is True and post["max_tokens"] == 0 and post["logprobs"] >= 1
    assert post["model"] == "fake-model"  # the first model /v1/models lists
    assert sorted(post["prompt"]) == sorted(TAGS + "\n\n1. e4 e5 2." + continuation(board, m)
                                            for m in board.legal_moves)
    assert len(choice.ranked) == board.legal_moves.count() and choice.ranked[0].move == choice.bestmove
    # Sums of the fake's per-character log-probabilities: " Nf3 " is five good characters; the
    # other knight moves share " N" and then go wrong.
    assert choice.ranked[0].win_prob > 0.99
    assert llm.stats.scored == 2 and llm.stats.sampled == llm.stats.fallbacks == 0
    assert choice.notes[-1] == ("llm_http stats: moves 1, scored 1, sampled 0, illegal answers 0, fallbacks 0, "
                                "requests 3, failed requests 0")  # /v1/models, the probe, the scoring request


def test_a_server_that_wants_a_new_token_still_scores_and_the_token_is_not_counted():
    board = board_after("e2e4", "e7e5")
    with FakeLlm(favourites=[TAGS + "\n\n1. e4 e5 2. Nf3 "], min_tokens=1) as fake:
        llm = player(fake, model="m")
        first, second = llm.choose_move(board), llm.choose_move(board)
    assert board.san(first.bestmove) == board.san(second.bestmove) == "Nf3"
    assert [p["max_tokens"] for p in fake.posts("/v1/completions")] == [1, 0, 1, 1]  # probe; then learnt once
    assert first.ranked[0].win_prob == pytest.approx(second.ranked[0].win_prob) and llm.can_score


def test_a_server_without_a_model_list_gets_requests_without_a_name():
    with FakeLlm(samples=[" e4"]) as fake:
        fake.models = []
        llm = player(fake, mode="sample")
        llm.choose_move(chess.Board())
        llm.choose_move(chess.Board())
    assert "model" not in fake.posts("/v1/completions")[0]
    assert [r["path"] for r in fake.requests].count("/v1/models") == 1


@pytest.mark.parametrize("wanted", ["e1g1", "e1c1"])
def test_scoring_tells_short_from_long_castling(wanted):
    board = board_after(fen="r3k2r/pppppppp/8/8/8/8/PPPPPPPP/R3K2R w KQkq - 0 1")
    favourite = pgn_prompt(board) + continuation(board, chess.Move.from_uci(wanted))
    with FakeLlm(favourites=[favourite]) as fake:
        choice = player(fake).choose_move(board)
    assert choice.bestmove == chess.Move.from_uci(wanted)


def test_scoring_after_blacks_move_includes_the_next_move_number():
    board = board_after("e2e4")
    with FakeLlm(favourites=[TAGS + "\n\n1. e4 c5 2."]) as fake:
        choice = player(fake, model="named-model").choose_move(board)
    assert board.san(choice.bestmove) == "c5"
    assert fake.posts("/v1/completions")[0]["model"] == "named-model"
    assert not [r for r in fake.requests if r["path"] == "/v1/models"]  # a named model needs no listing


def test_temperature_samples_among_the_scored_moves():
    board = board_after("e2e4", "e7e5")
    with FakeLlm(favourites=[TAGS + "\n\n1. e4 e5 2. Nf3 ", TAGS + "\n\n1. e4 e5 2. Nc3 "]) as fake:
        llm = player(fake)
        llm.temperature = 1.0
        llm.rng.seed(3)
        played = {board.san(llm.choose_move(board).bestmove) for _ in range(12)}
    assert played == {"Nf3", "Nc3"}  # both are likely; every other move is e^-6 less so or worse


# -- sampling ----------------------------------------------------------------------


def test_auto_mode_switches_to_sampling_once_the_server_refuses_echo():
    board = board_after("e2e4", "e7e5")
    with FakeLlm(echo_supported=False, samples=[" Nf3 Nc6 3. Bb5", " Bb5 a6"]) as fake:
        llm = player(fake)
        first = llm.choose_move(board)
        second = llm.choose_move(board_after("e2e4", "e7e5", "g1f3", "b8c6"))
    assert board.san(first.bestmove) == "Nf3"
    assert any("sampling from now on" in note and "echo is not supported" in note for note in first.notes)
    posts = fake.posts("/v1/completions")
    # One echo request (the probe), refused; never again.
    assert [bool(p.get("echo")) for p in posts] == [True, False, False]
    assert posts[1]["prompt"] == TAGS + "\n\n1. e4 e5 2." and posts[1]["stop"] == ["\n"]
    assert second.bestmove == chess.Move.from_uci("f1b5") and llm.stats.sampled == 2 and llm.stats.scored == 0
    assert "mode auto (sampling)" in llm.describe()


def test_illegal_answers_are_retried_with_rising_temperature():
    board = board_after("e2e4", "e7e5")
    with FakeLlm(samples=[" 1-0", " Ke9", " Qxf7", " 2... Nf3"]) as fake:
        llm = player(fake, mode="sample", tries=4)
        choice = llm.choose_move(board)
    assert board.san(choice.bestmove) == "Nf3"
    temperatures = [p["temperature"] for p in fake.posts("/v1/completions")]
    assert temperatures == sorted(temperatures) and temperatures[0] == 0 and len(set(temperatures)) == 4
    assert llm.stats.illegal_answers == 3 and llm.stats.sampled == 1 and llm.stats.fallbacks == 0
    assert any("illegal answers before Nf3" in note and "'1-0'" in note for note in choice.notes)


def test_no_legal_answer_falls_back_and_is_counted():
    board = board_after("e2e4", "e7e5")
    with FakeLlm(samples=[" 1-0"]) as fake:
        llm = player(fake, mode="sample", tries=3)
        first = llm.choose_move(board)
        second = llm.choose_move(board)
    assert first.bestmove in board.legal_moves and second.bestmove in board.legal_moves
    assert len(fake.posts("/v1/completions")) == 6  # bounded: three tries a move
    assert llm.stats.fallbacks == 2 and llm.stats.illegal_answers == 6 and llm.stats.moves == 2
    assert any("static fallback" in note for note in first.notes)
    assert "illegal answers 6, fallbacks 2," in second.notes[-1]


def test_fallback_engine_chooses_when_the_model_cannot():
    board = board_after("e2e4", "e7e5")

    class Stub:
        def __init__(self) -> None:
            self.asked: list[list[chess.Move]] = []

        def choose_move(self, board, *, control=None, searchmoves=None, **kwargs):
            self.asked.append(list(searchmoves))
            return MoveChoice(chess.Move.from_uci("b1c3"))

        def describe(self):
            return "stub.safetensors: action_value"

    stub = Stub()
    with FakeLlm(samples=[" resign"]) as fake:
        choice = player(fake, mode="sample", tries=2, fallback=stub).choose_move(board)
    assert choice.bestmove == chess.Move.from_uci("b1c3") and len(stub.asked) == 1
    assert any("fallback model stub.safetensors" in note for note in choice.notes)


def test_chat_mode_reads_the_move_out_of_a_sentence():
    board = board_after("e2e4", "e7e5")
    with FakeLlm(samples=["I would play Nf3, developing."]) as fake:
        choice = player(fake, mode="chat").choose_move(board)
    assert board.san(choice.bestmove) == "Nf3"
    (post,) = fake.posts("/v1/chat/completions")
    assert post["messages"][-1] == {"role": "user", "content": TAGS + "\n\n1. e4 e5 2."}


def test_mate_in_one_is_played_without_a_request_unless_the_rule_is_off():
    board = board_after("f2f3", "e7e5", "g2g4")
    with FakeLlm(samples=[" Nc6"]) as fake:
        llm = player(fake, mode="sample")
        assert board.san(llm.choose_move(board).bestmove) == "Qh4#"
        assert fake.posts("/v1/completions") == []
        llm.mate_rule = False
        assert board.san(llm.choose_move(board).bestmove) == "Nc6"


# -- faults ------------------------------------------------------------------------


def test_timeout_gives_a_fallback_move_not_a_hang():
    board = board_after("e2e4", "e7e5")
    with FakeLlm(hang=True) as fake:
        llm = player(fake, model="m", timeout=1, mode="sample", tries=3)
        llm.client.timeout = 0.3
        choice = llm.choose_move(board)
    assert choice.bestmove in board.legal_moves
    assert llm.stats.fallbacks == 1 and llm.stats.failed_requests == 1  # a timeout is not retried
    assert any("no answer from http://127.0.0.1" in note and "within 0.3 s" in note for note in choice.notes)


def test_the_deadline_bounds_the_request():
    board = board_after("e2e4", "e7e5")
    with FakeLlm(hang=True) as fake:
        llm = player(fake, model="m", timeout=30, mode="score")
        control = SearchControl(deadline=llm.clock() + 0.4)
        choice = llm.choose_move(board, control=control)
    assert choice.bestmove in board.legal_moves and llm.stats.fallbacks == 1
    # The request got what was left of the 0.4 s, not the 30 s timeout.
    assert any(re.search(r"within 0\.[0-4] s", note) for note in choice.notes)


def test_stop_ends_the_wait_for_the_server_at_once():
    board = board_after("e2e4", "e7e5")
    with FakeLlm(hang=True) as fake:
        llm = player(fake, model="m", timeout=600, mode="sample")
        control = SearchControl()  # no deadline: go infinite
        answer: list[MoveChoice] = []
        searching = threading.Thread(target=lambda: answer.append(llm.choose_move(board, control=control)))
        searching.start()
        assert fake.received.wait(30)
        control.stop.set()
        searching.join(60)
        assert not searching.is_alive()  # the 600 s timeout did not hold the move
    (choice,) = answer
    assert choice.bestmove in board.legal_moves and llm.stats.fallbacks == 1
    assert any("stopped while waiting for the server" in note for note in choice.notes)


def test_garbage_answers_switch_auto_to_sampling_then_fall_back():
    board = board_after("e2e4", "e7e5")
    with FakeLlm(garbage=True) as fake:
        llm = player(fake, model="m")
        choice = llm.choose_move(board)
    assert choice.bestmove in board.legal_moves
    assert llm.can_score is False and llm.stats.fallbacks == 1
    assert any("is not JSON" in note for note in choice.notes)


def test_a_server_that_echoes_only_the_new_tokens_logprob_is_sampled():
    board = board_after("e2e4", "e7e5")
    with FakeLlm(generated_logprobs_only=True, samples=[" Nf3"]) as fake:
        llm = player(fake, model="m")
        choice = llm.choose_move(board)
    assert board.san(choice.bestmove) == "Nf3" and llm.can_score is False and llm.stats.sampled == 1
    assert [p["max_tokens"] for p in fake.posts("/v1/completions")] == [1, 10]  # never the batch, never 0
    assert any("no log-probabilities of the prompt" in note for note in choice.notes)
    with FakeLlm(generated_logprobs_only=True) as fake:  # told to score: the answer is refused, not trusted
        forced = player(fake, model="m", mode="score")
        choice = forced.choose_move(board)
    assert forced.stats.fallbacks == 1 and any("do not spell the prompt" in note for note in choice.notes)


def test_malformed_echo_fields_are_unsupported_scoring():
    board = board_after("e2e4", "e7e5")
    with FakeLlm(samples=[" d4"]) as fake:
        fake.echo_choice = lambda index, text: {"index": index, "text": text, "logprobs": None}  # type: ignore
        llm = player(fake, model="m")
        choice = llm.choose_move(board)
    assert board.san(choice.bestmove) == "d4" and llm.can_score is False
    assert any("no log-probabilities" in note for note in choice.notes)


@pytest.mark.parametrize("status", [401, 500])
def test_http_errors_never_show_the_key(status, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    board = board_after("e2e4", "e7e5")
    with FakeLlm(status=status) as fake:
        llm = player(fake, model="m", environ={"OPENAI_API_KEY": SECRET}, tries=2)
        choice = llm.choose_move(board)
        with pytest.raises(LlmHttpError) as error:
            llm.client.request("/completions", {"prompt": "x"})
    # The key did travel, in the header only, and the server quoted it back in its error.
    assert fake.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert choice.bestmove in board.legal_moves and llm.stats.fallbacks == 1
    assert any(f"HTTP {status}" in note and "refused; you sent Bearer ***" in note for note in choice.notes)
    shown = " ".join(choice.notes) + llm.describe() + repr(llm.settings) + repr(llm.stats)
    captured = capsys.readouterr()
    assert SECRET not in shown + captured.out + captured.err + caplog.text
    assert SECRET not in str(error.value) and error.value.status == status


def test_the_option_key_wins_over_the_environment():
    with FakeLlm(samples=[" e4"]) as fake:
        llm = player(fake, mode="sample", environ={"NEURALENGINE_LLM_API_KEY": "from-env", "OPENAI_API_KEY": "x"})
        llm.choose_move(chess.Board())
        llm.apply_options({"llmapikey": "from-option", "llmmodel": "opt-model", "llmmode": "sample"})
        llm.choose_move(chess.Board())
    first, second = (r for r in fake.requests if r["path"] == "/v1/completions")
    assert first["headers"]["Authorization"] == "Bearer from-env"
    assert second["headers"]["Authorization"] == "Bearer from-option" and second["json"]["model"] == "opt-model"


def test_engine_open_takes_a_url(monkeypatch):
    from neuralengine.engine import Engine

    monkeypatch.setenv("NEURALENGINE_LLM_MODEL", "env-model")
    with FakeLlm(favourites=[TAGS + "\n\n1. d4"]) as fake:
        engine = Engine.open(fake.url + "/completions", "auto", 1, mate_rule=False)
        assert engine.mate_rule is False and "env-model" in engine.describe()
        assert engine.choose_move(chess.Board()).bestmove == chess.Move.from_uci("d2d4")
    with pytest.raises(TypeError):
        Engine.open("http://127.0.0.1:9/v1", no_such_setting=1)


def test_analyse_ranks_the_moves_of_a_language_model(capsys, monkeypatch):
    from neuralengine.analyse import main

    monkeypatch.setenv("NEURALENGINE_LLM_API_KEY", SECRET)
    with FakeLlm(favourites=[TAGS + "\n\n1. e4 e5 2. Nf3 "]) as fake:
        assert main(["--weights", fake.url, "--moves", "e2e4", "e7e5", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert f"model     {fake.url}: llm_http, model the server's model, mode auto" in out
    assert "\n   1  g1f3   Nf3" in out and SECRET not in out


# -- behind UCI --------------------------------------------------------------------


def engine_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def test_uci_plays_and_analyses_through_python_chess(engine_command, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="chess.engine")
    log = tmp_path / "stderr.txt"
    favourites = [TAGS + "\n\n1. e4 e5 2. Nf3 Nc6 3. Bb5 "]
    with FakeLlm(favourites=favourites) as fake, open(log, "wb") as err:
        env = engine_env(NEURALENGINE_LLM_API_KEY=SECRET)
        engine = chess.engine.SimpleEngine.popen_uci(engine_command + ["uci", "--weights", fake.url],
                                                     env=env, stderr=err)
        try:
            board = chess.Board()
            played = []
            for reply in ("e7e5", "b8c6"):
                result = engine.play(board, chess.engine.Limit(time=30), info=chess.engine.INFO_ALL)
                played.append(board.san(result.move))
                board.push(result.move)
                board.push_uci(reply)
            info = engine.analyse(board, chess.engine.Limit(time=30))
            assert board.san(info["pv"][0]) == "Bb5" and "score" in info
            engine.configure({"LLMMode": "sample", "LLMModel": "from-gui"})
            result = engine.play(board, chess.engine.Limit(time=30))  # the fake's sample is " e4": illegal here
            assert result.move in board.legal_moves
            fen = "r3k2r/8/8/8/8/8/8/R3K2R b KQkq - 3 17"
            started = chess.Board(fen)
            started.push_uci("e8g8")
            engine.play(started, chess.engine.Limit(time=30))  # position fen ... moves e8g8
        finally:
            engine.quit()
    assert played == ["e4", "Nf3"]
    assert fake.posts("/v1/completions")[-1]["prompt"].endswith(
        f'[SetUp "1"]\n[FEN "r3k2r/8/8/8/8/8/8/R3K2R b KQkq - 3 17"]\n\n17... O-O 18.')
    sampled = [p for p in fake.posts("/v1/completions") if "echo" not in p]
    assert sampled[0]["model"] == "from-gui" and sampled[0]["prompt"] == TAGS + "\n\n1. e4 e5 2. Nf3 Nc6 3."
    assert all(r["headers"].get("Authorization") == f"Bearer {SECRET}" for r in fake.requests)
    assert "info string llm_http stats: moves 4, scored 3, sampled 0, illegal answers 4, fallbacks 1," in caplog.text
    assert "info string llm_http stats: moves 5, scored 3, sampled 0, illegal answers 8, fallbacks 2," in caplog.text
    assert SECRET not in caplog.text + log.read_text(errors="replace")


def test_uci_debug_log_hides_a_key_set_by_option(engine_command):
    from uci_pipe import Uci

    with FakeLlm(samples=[" e4"]) as fake:
        url = fake.url + "?api-version=2024-10-21"
        uci = Uci(engine_command + ["uci", "--llm-url", url, "--llm-mode", "sample"], env=engine_env())
        uci.send("debug on")
        uci.send("uci")
        declared = uci.until("uciok")
        uci.send(f"setoption name LLMApiKey value {SECRET}")
        uci.send("position startpos")
        uci.send("go movetime 60000")
        lines = uci.until("bestmove", timeout=90)
        uci.close()
    assert lines[-1] == "bestmove e2e4"
    assert "option name LLMApiKey type string default <empty>" in declared
    assert f"option name WeightsFile type string default {url}" in declared  # the user's own URL, as given
    assert fake.requests[-1]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert fake.requests[-1]["path"] == "/v1/completions?api-version=2024-10-21"  # the query goes along
    stderr = b"".join(uci.stderr).decode(errors="replace")
    assert "setoption name LLMApiKey value ***" in stderr and f"loading {fake.url} with backend" in stderr
    assert SECRET not in stderr + "\n".join(uci.seen)


def test_a_server_that_is_down_still_gets_legal_moves_over_uci(engine_command):
    from uci_pipe import Uci

    with FakeLlm() as fake:
        url = fake.url
    # The fake is closed: nothing listens on its port any more.
    uci = Uci(engine_command + ["uci", "--weights", url], env=engine_env())
    uci.send("uci")
    uci.until("uciok")
    uci.send("position startpos moves e2e4")
    uci.send("go movetime 30000")
    lines = uci.until("bestmove", timeout=60)
    uci.close()
    move = chess.Move.from_uci(lines[-1].split()[1])
    assert move in board_after("e2e4").legal_moves
    assert any("cannot reach" in line for line in lines)
    assert any("llm_http stats: moves 1," in line and "fallbacks 1," in line for line in lines)


def test_cli_help_names_the_llm_flags():
    out = subprocess.run([sys.executable, "-m", "neuralengine", "uci", "--help"], capture_output=True, text=True,
                         env=engine_env(), timeout=60).stdout
    assert "--llm-url" in out and "--llm-mode" in out and "OPENAI_API_KEY" in out


# -- match -------------------------------------------------------------------------


def test_player_reports_are_summed_per_process():
    from neuralengine.benchmarks.runner import EngineStats, Player, player_report

    assert player_report("llm_http stats: moves 2, illegal answers 3, fallbacks 1") == {
        "moves": 2, "illegal answers": 3, "fallbacks": 1}
    assert player_report("loaded model.safetensors: action_value") is None
    assert player_report("x stats: moves two") is None and player_report(None) is None
    stats = EngineStats("ours")
    player = Player(None, stats)  # type: ignore[arg-type]
    for text in ("llm_http stats: moves 1, fallbacks 0", "llm_http stats: moves 2, fallbacks 1",
                 "the model said 1-0", "llm_http stats: moves 3, fallbacks 1"):
        player.note_report(text)
    player.reported = {}  # a restarted process counts from zero again
    player.note_report("llm_http stats: moves 1, fallbacks 1")
    assert stats.player_counts == {"moves": 4, "fallbacks": 2}
    assert stats.to_dict()["player_counts"] == {"moves": 4, "fallbacks": 2}
    assert "player_counts" not in EngineStats("other").to_dict()


def test_match_against_the_random_mover_counts_illegal_answers_and_fallbacks(tmp_path, capsys, monkeypatch):
    from neuralengine.benchmarks import match

    monkeypatch.setenv("NEURALENGINE_LLM_API_KEY", SECRET)
    out = tmp_path / "out"
    with FakeLlm(samples=[" 1-0"]) as fake:
        code = match.main(["--tool", "builtin", "--weights", fake.url, "--random-mover", "--games", "2",
                           "--tc", "20+0.5", "--max-moves", "6", "--engine-option", "LLMMode=sample",
                           "--engine-option", "LLMTries=2", "--out", str(out), "--quiet"])
    assert code == 0
    report = (out / "match.json").read_text()
    import json

    counts = json.loads(report)["engines"]["neuralengine"]["player_counts"]
    moves = json.loads(report)["engines"]["neuralengine"]["moves"]
    assert counts["moves"] == counts["fallbacks"] == moves > 0 and counts["illegal answers"] == 2 * moves
    assert json.loads(report)["soak"]["illegal_moves"] == 0  # every fallback move was legal
    assert json.loads(report)["record"]["model"] == {"endpoint": fake.url}
    captured = capsys.readouterr()
    printed = captured.out
    assert "a text model reads the game: the built-in openings are played from the initial position" in captured.err
    assert f"neuralengine reports: moves {moves}, scored 0, sampled 0, illegal answers {2 * moves}" in printed
    written = "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    assert SECRET not in written + printed
    assert match.main(["--weights", fake.url, "--random-mover", "--engine-option", f"LLMApiKey={SECRET}",
                       "--dry-run"]) == 2
    assert SECRET not in capsys.readouterr().err


def test_lichess_check_wants_the_key_in_the_environment():
    from neuralengine.lichess import uci_option_problems

    problems = uci_option_problems({"WeightsFile": "http://127.0.0.1:8000/v1", "LLMModel": "m",
                                    "LLMMode": "sample", "LLMApiKey": SECRET})
    assert len(problems) == 1 and problems[0].startswith("engine.uci_options.LLMApiKey: lichess-bot logs")
    assert SECRET not in problems[0]


def test_puzzles_with_a_language_model_need_the_game(engine_command, tmp_path, capsys):
    import json
    import shlex
    from pathlib import Path

    from neuralengine.benchmarks import puzzles as pz

    csv = Path(__file__).resolve().parent / "data" / "puzzles_with_games.csv"
    out = tmp_path / "out"
    with FakeLlm(samples=[" e4"]) as fake:
        code = pz.main([str(csv), "--weights", fake.url, "--engine", shlex.join(engine_command), "--movetime", "2",
                        "--out", str(out), "--quiet"])
    assert code == 0
    assert "1 puzzles skipped" in capsys.readouterr().err
    report = json.loads((out / "puzzles.json").read_text())
    assert report["skipped_without_game"] == 1 and report["accuracy"]["overall"]["puzzles"] == 3
    assert report["accuracy"]["overall"]["solved"] == 3  # mates in one: the mate rule plays them, no request
    assert fake.posts("/v1/completions") == []
