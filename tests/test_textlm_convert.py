"""``neuralengine convert nanogpt``: checkpoints written by nanoGPT's own model code, converted and played.

The fixtures under tests/data/nanogpt/ (see its README) hold nanoGPT's logits
at every character of a few transcripts and, for a few positions, the
log-probability nanoGPT gives each legal move's text and the best move.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import chess
import numpy as np
import pytest

from neuralengine.textlm.convert import ConvertError, convert_nanogpt, read_meta
from neuralengine.textlm.model import TextLM
from neuralengine.textlm.player import TextLMEngine
from neuralengine.textlm.transcript import CHESS_GPT_VOCABULARY, Vocabulary
from neuralengine.weights import WeightsError, load_text_weights, load_weights

torch = pytest.importorskip("torch")

FIXTURES = Path(__file__).resolve().parent / "data" / "nanogpt"
CASES = ["compiled_nobias", "plain_bias"]


def reference(case: str) -> dict:
    return json.loads((FIXTURES / case / "reference.json").read_text())


def convert(case: str, tmp_path: Path) -> Path:
    folder = FIXTURES / case
    meta = folder / "meta.pkl"
    return convert_nanogpt(folder / "ckpt.pt", tmp_path / f"{case}.safetensors",
                           meta=meta if meta.is_file() else None, report=lambda _: None)


@pytest.mark.parametrize("case", CASES)
def test_converted_logits_match_nanogpt_at_every_character(case: str, tmp_path: Path) -> None:
    ref = reference(case)
    model = TextLM.load(convert(case, tmp_path))
    vocab = Vocabulary(model.config.vocabulary)
    assert "".join(vocab.chars) == ref["vocabulary"]
    logits = np.load(FIXTURES / case / "logits.npz")
    assert set(logits.files) == set(ref["transcripts"])
    for game, text in ref["transcripts"].items():
        ours = model.forward([vocab.encode(text)]).logits[0]
        assert ours.shape == logits[game].shape
        np.testing.assert_allclose(ours, logits[game], atol=1e-5, rtol=0, err_msg=game)
        assert np.abs(logits[game]).max() > 1.0  # the fixture's predictions are not flat


@pytest.mark.parametrize("case", CASES)
def test_converted_model_chooses_nanogpts_moves(case: str, tmp_path: Path) -> None:
    ref = reference(case)
    engine = TextLMEngine(TextLM.load(convert(case, tmp_path)), mate_rule=False)
    assert len(ref["positions"]) >= 10
    for position in ref["positions"]:
        board = chess.Board()
        for uci in position["moves"]:
            board.push_uci(uci)
        scores = engine.log_probs(board)
        assert {m.uci() for m in scores} == set(position["scores"])
        for move, value in scores.items():
            assert value == pytest.approx(position["scores"][move.uci()], abs=1e-4)
        choice = engine.choose_move(board)
        assert choice.bestmove.uci() == position["best"], position["moves"]
        assert not choice.notes and choice.nodes == len(position["scores"])


def test_the_unmasked_move_follows_nanogpts_greedy_characters(tmp_path: Path) -> None:
    ref = reference("plain_bias")
    engine = TextLMEngine(TextLM.load(convert("plain_bias", tmp_path)), fallback=None)
    logits = np.load(FIXTURES / "plain_bias" / "logits.npz")
    vocab = Vocabulary()
    text = ref["transcripts"]["ruy_lopez"]
    board = chess.Board()
    sans = text[1:].split()
    for word in sans[:3]:  # ;1.e4 e5 2.Nf3 -> black to move after "2.Nf3 "
        board.push_san(word.split(".")[-1])
    said, move = engine.unmasked_move(board)
    # nanoGPT's most probable character after the prefix ";1.e4 e5 2.Nf3 " is the first one said.
    prefix_len = len(";1.e4 e5 2.Nf3 ")
    assert vocab.index[said[0]] == int(np.argmax(logits["ruy_lopez"][prefix_len - 1]))
    assert move is None or move in board.legal_moves
    assert len(said) <= 16


def test_the_metadata_carries_the_architecture_and_the_vocabulary(tmp_path: Path) -> None:
    weights = load_text_weights(convert("compiled_nobias", tmp_path))
    cfg = weights.config
    assert (cfg.kind, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.bias) == ("pgn_lm", 2, 4, 48, 96,
                                                                                         False)
    assert "".join(cfg.vocabulary) == reference("compiled_nobias")["vocabulary"]
    assert not any(name.startswith("_orig_mod.") or name == "lm_head.weight" for name in weights.tensors)
    assert cfg.num_parameters() == sum(t.size for t in weights.tensors.values())
    plain = load_text_weights(convert("plain_bias", tmp_path))
    assert plain.config.vocabulary == CHESS_GPT_VOCABULARY  # no meta.pkl: Chess-GPT's vocabulary
    assert plain.config.num_parameters() == sum(t.size for t in plain.tensors.values())
    with pytest.raises(WeightsError, match="pgn_lm text model"):
        load_weights(weights.path)  # the board models' loader says what it got


def test_the_command_line_converts_into_a_folder(tmp_path: Path) -> None:
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "neuralengine", "convert", "nanogpt",
                           str(FIXTURES / "plain_bias" / "ckpt.pt"), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "ckpt.safetensors")
    assert "2 layers × 32" in proc.stderr
    assert load_text_weights(tmp_path / "ckpt.safetensors").config.bias is True


class Boom:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo owned",))


def test_a_meta_pkl_with_any_object_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "meta.pkl"
    bad.write_bytes(pickle.dumps({"itos": {0: "a"}, "stoi": {"a": 0}, "hook": Boom()}))
    with pytest.raises(ConvertError, match=r"refused: it asks for the object posix\.system|refused: it asks for "
                                           r"the object nt\.system"):
        read_meta(bad)
    floats = tmp_path / "floats.pkl"
    floats.write_bytes(pickle.dumps({"itos": {0: "a"}, "stoi": {"a": 0}, "scale": 1.5}))
    with pytest.raises(ConvertError, match="holds a float"):
        read_meta(floats)
    listed = tmp_path / "list.pkl"
    listed.write_bytes(pickle.dumps({"itos": ["a", "b"]}))
    with pytest.raises(ConvertError, match="holds a list"):
        read_meta(listed)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(ConvertError, match="not a readable meta.pkl"):
        read_meta(garbage)
    assert read_meta(FIXTURES / "compiled_nobias" / "meta.pkl") == tuple(reference("compiled_nobias")["vocabulary"])


def test_the_command_line_refuses_a_malicious_meta_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    bad = tmp_path / "meta.pkl"

    class Touch:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    bad.write_bytes(pickle.dumps({"itos": dict(enumerate(CHESS_GPT_VOCABULARY)), "x": Touch()}))
    proc = subprocess.run([sys.executable, "-m", "neuralengine", "convert", "nanogpt",
                           str(FIXTURES / "plain_bias" / "ckpt.pt"), "--meta", str(bad), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "refused" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists() and not (tmp_path / "ckpt.safetensors").exists()


def test_a_checkpoint_with_objects_is_not_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Touch:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": {}, "model_args": {}, "hook": Touch()}, ckpt)
    with pytest.raises(ConvertError, match="holds objects other than tensors"):
        convert_nanogpt(ckpt, tmp_path / "out.safetensors", report=lambda _: None)
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ConvertError, match="not a readable PyTorch checkpoint"):
        convert_nanogpt(tmp_path / "junk.pt", tmp_path / "out.safetensors", report=lambda _: None)


def test_mismatched_checkpoints_are_explained(tmp_path: Path) -> None:
    source = torch.load(FIXTURES / "plain_bias" / "ckpt.pt", weights_only=True)
    # A vocabulary of another size than the model's.
    meta = tmp_path / "meta.pkl"
    meta.write_bytes(pickle.dumps({"itos": {0: "a", 1: "b"}, "stoi": {"a": 0, "b": 1}}))
    with pytest.raises(ConvertError, match="32 tokens but the vocabulary 2"):
        convert_nanogpt(FIXTURES / "plain_bias" / "ckpt.pt", tmp_path / "o.safetensors", meta=meta,
                        report=lambda _: None)
    # bias=False in model_args for a model that has biases.
    wrong = dict(source, model_args=dict(source["model_args"], bias=False))
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(ConvertError, match="does not match model_args"):
        convert_nanogpt(tmp_path / "wrong.pt", tmp_path / "o.safetensors", report=lambda _: None)
    # An untied output head.
    untied = {k: v.clone() for k, v in source["model"].items()}
    untied["lm_head.weight"] = untied["lm_head.weight"] + 1.0
    torch.save(dict(source, model=untied), tmp_path / "untied.pt")
    with pytest.raises(ConvertError, match="tied"):
        convert_nanogpt(tmp_path / "untied.pt", tmp_path / "o.safetensors", report=lambda _: None)
    assert not (tmp_path / "o.safetensors").exists()


def test_the_old_attention_mask_buffers_are_dropped(tmp_path: Path) -> None:
    source = torch.load(FIXTURES / "compiled_nobias" / "ckpt.pt", weights_only=True)
    state = dict(source["model"])
    for i in range(2):
        state[f"_orig_mod.transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(96, 96)).view(1, 1, 96, 96)
    torch.save(dict(source, model=state), tmp_path / "old.pt")
    path = convert_nanogpt(tmp_path / "old.pt", tmp_path / "old.safetensors",
                           meta=FIXTURES / "compiled_nobias" / "meta.pkl", report=lambda _: None)
    assert load_text_weights(path).config.bias is False


def test_meta_reading_takes_the_vocabulary_order_from_itos(tmp_path: Path) -> None:
    chars = list("ba;")
    meta = tmp_path / "m.pkl"
    meta.write_bytes(pickle.dumps({"vocab_size": 3, "itos": dict(enumerate(chars)),
                                   "stoi": {c: i for i, c in enumerate(chars)}}))
    assert read_meta(meta) == ("b", "a", ";")
    meta.write_bytes(pickle.dumps({"itos": {0: "b", 1: "a"}, "stoi": {"a": 0, "b": 1}}))
    with pytest.raises(ConvertError, match="disagree"):
        read_meta(meta)
    buffer = io.BytesIO()
    pickle.dump({"itos": {0: "ab"}}, buffer)
    meta.write_bytes(buffer.getvalue())
    with pytest.raises(ConvertError, match="single characters"):
        read_meta(meta)


def test_a_nanogpt_checkpoint_plays_in_a_gui_with_one_command(tmp_path: Path) -> None:
    """The GUI's engine command names the .pt file: it is converted once into the cache, then played."""
    import shutil

    import chess.engine

    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(FIXTURES / "compiled_nobias" / "ckpt.pt", folder / "ckpt.pt")
    shutil.copy(FIXTURES / "compiled_nobias" / "meta.pkl", folder / "meta.pkl")  # beside it: used
    env = dict(os.environ, NEURALENGINE_CACHE=str(tmp_path / "cache"))
    command = [sys.executable, "-m", "neuralengine", "uci", "--weights", str(folder / "ckpt.pt")]
    position = reference("compiled_nobias")["positions"][5]
    board = chess.Board()
    for uci in position["moves"]:
        board.push_uci(uci)
    for _ in range(2):  # the second start finds the conversion
        engine = chess.engine.SimpleEngine.popen_uci(command, env=env, timeout=60)
        try:
            engine.configure({"MateRule": False})
            assert engine.play(board, chess.engine.Limit(time=5)).move.uci() == position["best"]
        finally:
            engine.quit()
    assert len(list((tmp_path / "cache" / "nanogpt").glob("*/ckpt.safetensors"))) == 1
