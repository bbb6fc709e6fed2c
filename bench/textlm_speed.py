"""How fast the ``pgn_lm`` player chooses a move, on NumPy (and, for comparison, the same forward in PyTorch).

A random model of Chess-GPT's size (8 layers x 512, 8 heads, context 1023,
no biases; random weights cost what trained ones cost) plays positions of one
game (random legal moves, seeded) at several plies. For each it reports:

* ``cold``: a move choice with nothing cached: the whole transcript is read,
  then every legal move is scored in one batched call;
* ``warm``: the move choice of the next turn in the same game, which reads
  only the characters the last two plies added (the UCI case);
* ``torch``: PyTorch's time for the cold prefix alone, with the same
  arithmetic written in PyTorch (only when PyTorch is installed), to compare
  the NumPy core with what an optional PyTorch path would give.

    python bench/textlm_speed.py                      # Chess-GPT's 8-layer size
    python bench/textlm_speed.py --layers 16 --json   # the 16-layer size
    pytest bench -k textlm_speed                      # one small run
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import chess
import numpy as np

from neuralengine.config import TextModelConfig
from neuralengine.textlm.model import TextLM
from neuralengine.textlm.player import TextLMEngine
from neuralengine.textlm.transcript import CHESS_GPT_VOCABULARY, Vocabulary, prefix
from neuralengine.weights import save_text_weights, text_expected_shapes


def random_model(folder: Path, layers: int, width: int, heads: int, block: int) -> Path:
    cfg = TextModelConfig(n_layer=layers, n_head=heads, n_embd=width, block_size=block,
                          vocabulary=CHESS_GPT_VOCABULARY, bias=False)
    rng = np.random.default_rng(0)
    tensors = {k: (0.02 * rng.standard_normal(s)).astype(np.float32) for k, s in text_expected_shapes(cfg).items()}
    for k in tensors:
        if ".ln_" in k or k.startswith("transformer.ln_f"):
            tensors[k] = np.ones_like(tensors[k])
    return save_text_weights(folder / "random-chessgpt.safetensors", cfg, tensors, provenance={"source": "bench"})


def game(plies: int, seed: int = 1) -> chess.Board:
    rng = random.Random(seed)
    board = chess.Board()
    while len(board.move_stack) < plies and not board.is_game_over():
        board.push(rng.choice(list(board.legal_moves)))
    return board


def torch_prefix_seconds(model: TextLM, tokens: list[int], repeats: int) -> float | None:
    """The cold prefix's forward pass written in PyTorch (same weights, same arithmetic), median seconds."""
    try:
        import torch
    except ImportError:
        return None
    cfg = model.config
    t = {k: torch.from_numpy(v) for k, v in (("wte", model.wte), ("wpe", model.wpe))}
    layers = [{name: (torch.from_numpy(w), torch.from_numpy(b)) for name, (w, b) in layer.items()}
              for layer in model.layers]
    ln_f = tuple(torch.from_numpy(a) for a in model.ln_f)
    ids = torch.tensor([tokens])
    n, d, h = len(tokens), cfg.n_embd, cfg.n_head

    def norm(x: torch.Tensor, p: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.layer_norm(x, (d,), p[0], p[1], cfg.layer_norm_eps)

    def run() -> None:
        with torch.no_grad():
            x = t["wte"][ids] + t["wpe"][:n]
            for layer in layers:
                q, k, v = (x_.view(1, n, h, d // h).transpose(1, 2)
                           for x_ in (norm(x, layer["ln_1"]) @ layer["c_attn"][0] + layer["c_attn"][1]).split(d, 2))
                y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
                x = x + (y.transpose(1, 2).reshape(1, n, d) @ layer["attn_proj"][0] + layer["attn_proj"][1])
                hidden = torch.nn.functional.gelu(norm(x, layer["ln_2"]) @ layer["c_fc"][0] + layer["c_fc"][1])
                x = x + (hidden @ layer["mlp_proj"][0] + layer["mlp_proj"][1])
            _ = norm(x, ln_f) @ t["wte"].T

    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(layers: int = 8, width: int = 512, heads: int = 8, block: int = 1023, plies: tuple[int, ...] = (20, 60, 100),
            repeats: int = 3) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="neuralengine-textlm-bench-") as tmp:
        model = TextLM.load(random_model(Path(tmp), layers, width, heads, block))
        vocab = Vocabulary()
        for ply in plies:
            board = game(ply)
            if len(prefix(board)) + 12 > block:
                continue
            cold, warm = [], []
            for _ in range(repeats):
                engine = TextLMEngine(model, fallback=None, mate_rule=False)
                earlier = board.copy()
                earlier.pop()
                earlier.pop()
                start = time.perf_counter()
                engine.choose_move(board)
                cold.append(time.perf_counter() - start)
                engine.choose_move(earlier)  # the turn before, then this one: only two plies are new
                start = time.perf_counter()
                choice = engine.choose_move(board)
                warm.append(time.perf_counter() - start)
            rows.append({"plies": len(board.move_stack), "characters": len(prefix(board)),
                         "legal_moves": choice.nodes, "cold_ms": 1000 * statistics.median(cold),
                         "warm_ms": 1000 * statistics.median(warm),
                         "torch_prefix_ms": (lambda s: None if s is None else 1000 * s)(
                             torch_prefix_seconds(model, vocab.encode(prefix(board)), repeats)),
                         "layers": layers, "width": width})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--block", type=int, default=1023)
    parser.add_argument("--plies", type=int, nargs="+", default=[20, 60, 100])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = measure(args.layers, args.width, args.heads, args.block, tuple(args.plies), args.repeats)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"pgn_lm {args.layers} x {args.width}: median of {args.repeats}")
    print(f"{'plies':>5} {'chars':>5} {'moves':>5} {'cold ms':>9} {'warm ms':>9} {'torch prefix ms':>16}")
    for r in rows:
        torch_ms = "-" if r["torch_prefix_ms"] is None else f"{r['torch_prefix_ms']:.1f}"
        print(f"{r['plies']:>5} {r['characters']:>5} {r['legal_moves']:>5} {r['cold_ms']:>9.1f} {r['warm_ms']:>9.1f} "
              f"{torch_ms:>16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
