"""Writes the nanoGPT fixtures of tests/test_textlm_convert.py with nanoGPT's own model code.

Run it from a folder outside this repository, with a nanoGPT checkout beside it:

    python make_fixtures.py --nanogpt path/to/nanoGPT --out path/to/tests/data/nanogpt

It builds two small GPTs with nanoGPT's ``model.GPT`` (random weights, made
larger than nanoGPT's initialisation so that the predictions are sharp),
saves them as nanoGPT's ``train.py`` saves checkpoints, and records what
nanoGPT's forward pass computes: the logits at every character of a few
transcripts, and for a few game positions the log-probability of every
legal move's text and the move with the highest one. The move texts are
written here from python-chess only (move number where due, SAN, a space).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path

import chess
import numpy as np
import torch

VOCAB = " #+-.0123456789;=BKNOQRabcdefghx"

GAMES = {
    "ruy_lopez": "e4 e5 Nf3 Nc6 Bb5 a6 Ba4 Nf6 O-O Be7 Re1 b5 Bb3 d6 c3 O-O",
    "fools_mate": "f3 e5 g4 Qh4#",
    "promotion": "e4 d5 exd5 c6 dxc6 Nf6 cxb7 Nbd7 bxa8=Q+",
    "long_castle": "d4 d5 Nc3 Nc6 Bf4 Bf5 Qd2 Qd7 O-O-O O-O-O",
}


def transcript(sans: list[str]) -> str:
    text = ";"
    for ply, san in enumerate(sans):
        if ply:
            text += " "
        if ply % 2 == 0:
            text += f"{ply // 2 + 1}."
        text += san
    return text


def perturb(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.25 * noise)


def all_logits(model: torch.nn.Module, ids: list[int]) -> np.ndarray:
    x = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        logits, _ = model(x, targets=x)  # with targets nanoGPT returns every position's logits
    return logits[0].numpy().astype(np.float32)


def move_scores(model: torch.nn.Module, stoi: dict[str, int], sans: list[str], block: int) -> dict:
    board = chess.Board()
    for san in sans:
        board.push_san(san)
    prefix = transcript(sans) + (" " if sans else "")
    scores = {}
    for move in board.legal_moves:
        text = (f"{board.fullmove_number}." if board.turn == chess.WHITE else "") + board.san(move) + " "
        ids = [stoi[c] for c in prefix + text]
        if len(ids) - 1 > block:
            return {}
        logits = torch.tensor(all_logits(model, ids[:-1]), dtype=torch.float64)
        logp = torch.log_softmax(logits, dim=-1)
        total = sum(float(logp[i - 1, ids[i]]) for i in range(len(prefix), len(ids)))
        scores[move.uci()] = total
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    return {"moves": [board.move_stack[i].uci() for i in range(len(sans))] if sans else [],
            "scores": scores, "best": ranked[0][0], "margin": ranked[0][1] - ranked[1][1]}


def build(nanogpt: Path, out: Path, name: str, *, n_layer: int, n_head: int, n_embd: int, block: int,
          bias: bool, compiled: bool, vocab: str, with_meta: bool, seed: int) -> None:
    sys.path.insert(0, str(nanogpt))
    from model import GPT, GPTConfig  # nanoGPT's own code, from the checkout given

    torch.manual_seed(seed)
    args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block, bias=bias,
                vocab_size=len(vocab), dropout=0.0)
    model = GPT(GPTConfig(**args))
    perturb(model, seed)
    model.eval()
    state = model.state_dict()
    if compiled:
        state = {"_orig_mod." + k: v for k, v in state.items()}
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "model_args": args, "iter_num": 1000, "best_val_loss": torch.tensor(1.25),
                "config": {"out_dir": "out", "dataset": "lichess", "compile": compiled, "learning_rate": 3e-4}},
               folder / "ckpt.pt")
    stoi = {c: i for i, c in enumerate(vocab)}
    if with_meta:
        with open(folder / "meta.pkl", "wb") as fh:
            pickle.dump({"vocab_size": len(vocab), "itos": dict(enumerate(vocab)), "stoi": stoi}, fh)
    reference: dict = {"model_args": args, "vocabulary": vocab, "transcripts": {}, "positions": []}
    arrays = {}
    for game, moves in GAMES.items():
        text = transcript(moves.split())[:block]
        reference["transcripts"][game] = text
        arrays[game] = all_logits(model, [stoi[c] for c in text])
    for game, moves in GAMES.items():
        sans = moves.split()
        for plies in sorted({0, 1, len(sans) // 2, len(sans) - 1}):
            found = move_scores(model, stoi, sans[:plies], block)
            if found:
                reference["positions"].append(found)
    np.savez_compressed(folder / "logits.npz", **arrays)
    (folder / "reference.json").write_text(json.dumps(reference, indent=1, sort_keys=True) + "\n")
    margins = [p["margin"] for p in reference["positions"]]
    print(f"{name}: {len(reference['positions'])} positions, smallest margin {min(margins):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nanogpt", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    shuffled = "".join(np.random.default_rng(5).permutation(list(VOCAB)))
    build(args.nanogpt, args.out, "compiled_nobias", n_layer=2, n_head=4, n_embd=48, block=96, bias=False,
          compiled=True, vocab=shuffled, with_meta=True, seed=1)
    build(args.nanogpt, args.out, "plain_bias", n_layer=2, n_head=2, n_embd=32, block=256, bias=True,
          compiled=False, vocab=VOCAB, with_meta=False, seed=2)


if __name__ == "__main__":
    main()
