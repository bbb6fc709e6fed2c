"""``neuralengine bench``: how fast the engine chooses moves.

For every backend asked for, the engine (:class:`neuralengine.engine.Engine`,
the code that answers ``go``) chooses a move in each position of the built-in
suite (:mod:`neuralengine.benchmarks.suite`). Reported per backend:

* **positions/s**: moves chosen per second;
* **nodes/s**: legal moves scored by the network per second (a "node" is one
  move evaluation, as in the engine's ``info nodes``);
* **move latency**: median and 95th percentile of the time to choose one move;
* **per node**: median and 95th percentile of that time divided by the
  position's legal-move count.

A text model (``pgn_lm``) reads games, not positions: it plays as many
moves of its own game from the initial position instead (grouped by ply).

``--compare-attention`` builds two random models of one size, DeepMind's full
attention and the shared-board layout, and measures both in the same run:
their cost does not depend on the weights, so random weights measure the
speed of trained ones exactly.

Results carry the machine, versions, model and commit
(:mod:`neuralengine.benchmarks.machine`); ``--json`` prints them for
machines.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from neuralengine.benchmarks.elo import jsonable
from neuralengine.benchmarks.machine import run_record
from neuralengine.benchmarks.suite import SuitePosition, load_suite
from neuralengine.config import TEXT_KINDS

#: Backends ``--backend all`` tries, in this order.
ALL_BACKENDS = ("onnx", "torch-cpu", "torch-cuda")


def available_backends() -> list[str]:
    """The backends this installation can run (CUDA only with a usable GPU)."""
    names = []
    if importlib.util.find_spec("onnxruntime") is not None:
        names.append("onnx")
    if importlib.util.find_spec("torch") is not None:
        names.append("torch-cpu")
        from neuralengine.backends import cuda_available

        if cuda_available():
            names.append("torch-cuda")
    return names


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` (0-100) of ``values``; nan when empty."""
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass
class BackendResult:
    """Timings of one model on one backend."""

    label: str
    backend: str
    device: str
    threads: int
    batch_size: int
    model: dict[str, Any]
    times: list[float] = field(default_factory=list)
    nodes: list[int] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    load_s: float = 0.0

    @property
    def total_s(self) -> float:
        return sum(self.times)

    @property
    def positions_per_s(self) -> float:
        return len(self.times) / self.total_s if self.total_s > 0 else math.nan

    @property
    def nodes_per_s(self) -> float:
        return sum(self.nodes) / self.total_s if self.total_s > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        ms = [t * 1000.0 for t in self.times]
        per_node = [t * 1e6 / n for t, n in zip(self.times, self.nodes) if n > 0]
        by_group: dict[str, Any] = {}
        for group in dict.fromkeys(self.groups):
            idx = [i for i, g in enumerate(self.groups) if g == group]
            g_times = [self.times[i] for i in idx]
            g_nodes = sum(self.nodes[i] for i in idx)
            by_group[group] = {
                "positions": len(idx),
                "mean_moves": g_nodes / len(idx),
                "positions_per_s": len(idx) / sum(g_times) if sum(g_times) > 0 else None,
                "median_ms": percentile([t * 1000.0 for t in g_times], 50),
            }
        return {
            "label": self.label,
            "backend": self.backend,
            "device": self.device,
            "threads": self.threads,
            "batch_size": self.batch_size,
            "model": self.model,
            "positions": len(self.times),
            "nodes": sum(self.nodes),
            "seconds": self.total_s,
            "load_seconds": self.load_s,
            "positions_per_s": self.positions_per_s,
            "nodes_per_s": self.nodes_per_s,
            "move_latency_ms": {"median": percentile(ms, 50), "p95": percentile(ms, 95),
                                "mean": sum(ms) / len(ms) if ms else math.nan, "max": max(ms, default=math.nan)},
            "per_node_us": {"median": percentile(per_node, 50), "p95": percentile(per_node, 95)},
            "by_group": by_group,
        }


def model_summary(weights: str | os.PathLike[str]) -> dict[str, Any]:
    from neuralengine.weights import any_config_from_metadata, file_sha256, read_metadata

    meta = read_metadata(weights)
    cfg = any_config_from_metadata(meta, str(weights))
    return {
        "file": Path(weights).name,
        "sha256": file_sha256(weights),
        "kind": cfg.kind,
        "attention": getattr(cfg, "attention", "causal"),
        "layers": cfg.num_layers,
        "width": cfg.embed_dim,
        "heads": cfg.num_heads,
        "parameters": cfg.num_parameters(),
        "random": (meta.get("provenance") or {}).get("source") == "random benchmark model",
    }


def bench_backend(weights: str | os.PathLike[str], backend: str, positions: Sequence[SuitePosition],
                  threads: int = 1, batch_size: int = 256, passes: int = 1, label: str = "",
                  progress: bool = False) -> BackendResult:
    """Choose a move in every position with one backend; the first positions warm it up first."""
    import chess

    from neuralengine.engine import Engine
    from neuralengine.progress import Progress

    start = time.perf_counter()
    engine = Engine.open(weights, backend, threads, batch_size=batch_size)
    load_s = time.perf_counter() - start
    result = BackendResult(label or Path(weights).stem, backend, engine.backend.device, threads, batch_size,
                           model_summary(weights), load_s=load_s)
    if engine.kind in TEXT_KINDS:
        return _bench_text_game(engine, result, len(positions), passes, progress)
    boards = [(chess.Board(p.fen), p.group) for p in positions]
    for board, _ in boards[:3]:  # caches, allocations, lazy kernels
        engine.choose_move(board)
    bar = Progress(f"bench {result.label} {backend}", len(boards) * passes, "pos", enabled=progress)
    for _ in range(passes):
        for board, group in boards:
            t0 = time.perf_counter()
            found = engine.choose_move(board)
            elapsed = time.perf_counter() - t0
            result.times.append(elapsed)
            result.nodes.append(found.nodes)
            result.groups.append(group)
            bar.update()
    bar.close()
    return result


def _bench_text_game(engine: Any, result: BackendResult, count: int, passes: int, progress: bool) -> BackendResult:
    """A text model reads games, not positions: it plays ``count`` moves of its own game, from the initial
    position, as in a UCI game (each move reads only the characters the last moves added). The game starts
    again when it ends or no longer fits the model's context; every pass replays it."""
    import chess

    from neuralengine.progress import Progress

    engine.choose_move(chess.Board())  # allocations
    bar = Progress(f"bench {result.label} game", count * passes, "pos", enabled=progress)
    for _ in range(passes):
        board = chess.Board()
        for _ in range(count):
            t0 = time.perf_counter()
            found = engine.choose_move(board)
            elapsed = time.perf_counter() - t0
            if found.notes or found.bestmove is None:  # beyond the context: timed by the fallback model
                board = chess.Board()
                continue
            result.times.append(elapsed)
            result.nodes.append(found.nodes)
            result.groups.append(f"plies {len(board.move_stack) // 20 * 20}-{len(board.move_stack) // 20 * 20 + 19}")
            board.push(found.bestmove)
            if board.is_game_over(claim_draw=True):
                board = chess.Board()
            bar.update()
    bar.close()
    return result


def write_random_model(folder: str | os.PathLike[str], cfg: Any, seed: int = 0, name: str | None = None,
                       onnx: bool = True) -> Path:
    """A randomly initialised model in the weights format (with its ONNX graph); needs PyTorch."""
    import torch

    from neuralengine.model import Transformer
    from neuralengine.weights import save_weights

    torch.manual_seed(seed)
    model = Transformer(cfg)
    tensors = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    name = name or f"random-{cfg.attention}-{cfg.num_layers}x{cfg.embed_dim}"
    path = save_weights(Path(folder) / f"{name}.safetensors", cfg, tensors,
                        provenance={"source": "random benchmark model", "seed": seed})
    if onnx:
        from neuralengine.export import export_weights_file

        export_weights_file(path)
    return path


def training_throughput(cfg: Any, data: Any, batch_size: int = 64, steps: int = 5, warmup: int = 2,
                        max_moves: int = 64, seed: int = 0) -> dict[str, float]:
    """Action values per second of real training steps (forward, backward,
    AdamW) on ``data`` (:class:`~neuralengine.train.data.ActionValueData`),
    as the trainer batches them for ``cfg.attention``.

    The shared-board model takes ``batch_size`` positions per step; the
    full model takes as many single action values as those positions hold,
    so both steps learn from the same number of action values.
    """
    import numpy as np
    import torch

    from neuralengine.config import FULL
    from neuralengine.model import Transformer
    from neuralengine.train.losses import loss_fn

    model = Transformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sigma = 0.75 / cfg.num_buckets
    seen, elapsed = 0, 0.0
    for i in range(warmup + steps):
        rng = np.random.default_rng([seed, i])
        idx = rng.integers(0, len(data), batch_size)
        boards, acts, probs, mask = data.position_batch(idx, max_moves, rng)
        if cfg.attention == FULL:
            rows, cols = np.nonzero(mask)
            boards, acts, probs = boards[rows], acts[rows, cols][:, None], probs[rows, cols][:, None]
            mask = np.ones_like(acts, dtype=bool)
        start = time.perf_counter()
        lp = model(torch.as_tensor(boards), torch.as_tensor(acts))
        loss = loss_fn(lp, torch.as_tensor(probs), torch.as_tensor(mask), "hl_gauss", sigma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            elapsed += time.perf_counter() - start
            seen += int(mask.sum())
    return {"action_values_per_s": seen / elapsed, "seconds": elapsed, "action_values": seen}


def training_comparison(configs: list[Any], positions: list[Any], threads: int, batch_size: int = 32,
                        steps: int = 3, rounds: int = 2) -> list[dict[str, Any]]:
    """Training action values/s of each model layout on the suite positions.

    Real training steps (forward, backward, AdamW) on batches of the suite's
    positions with all their legal moves (targets are random: only the cost
    is measured). The layouts alternate for ``rounds`` rounds and each keeps
    its best round, so a busy machine affects both alike.
    """
    import chess
    import numpy as np
    import torch

    from neuralengine.data.shards import Position, Shard, write_shard
    from neuralengine.encoding import legal_actions, tokenize_board
    from neuralengine.train.data import ActionValueData

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    samples = []
    for i, pos in enumerate(positions):
        board = chess.Board(pos.fen)
        _, actions = legal_actions(board)
        if len(actions):
            samples.append(Position(tokenize_board(board), actions, rng.random(len(actions)), i))
    best: dict[str, dict[str, float]] = {}
    # The data stays memory-mapped from the shard, so the folder lives as long as the measurement.
    with tempfile.TemporaryDirectory(prefix="neuralengine-bench-train-") as tmp:
        data = ActionValueData([Shard(write_shard(Path(tmp) / "suite.neav", samples))])
        for _ in range(rounds):
            for cfg in configs:
                r = training_throughput(cfg, data, batch_size=batch_size, steps=steps, warmup=1)
                if cfg.attention not in best or r["action_values_per_s"] > best[cfg.attention]["action_values_per_s"]:
                    best[cfg.attention] = r
        del data
    return [{"attention": a, **r} for a, r in best.items()]


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def format_table(report: dict[str, Any]) -> str:
    suite = report["suite"]
    record = report["record"]
    machine, versions = record["machine"], record["versions"]
    lines = [
        f"neuralengine bench: {suite['positions']} positions, {suite['nodes']} legal moves "
        f"({suite['nodes'] / max(suite['positions'], 1):.1f} per position)",
        f"machine: {machine['cpu']}, {machine['cpus_usable']} usable CPUs"
        + (f", GPU {', '.join(machine['gpus'])}" if machine["gpus"] else "")
        + f"; {machine['system']} {machine['machine']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
    ]
    if record.get("source"):
        src = record["source"]
        lines.append(f"source: commit {src['commit'][:12]}{' (modified)' if src.get('dirty') else ''}")
    lines.append("")
    models: dict[str, dict[str, Any]] = {}
    for r in report["results"]:
        models.setdefault(r["label"], r["model"])
    for label, m in models.items():
        lines.append(f"model {label}: {m['file']} sha256 {m['sha256'][:12]}, {m['kind']} {m['attention']} "
                     f"attention, {m['layers']} layers x {m['width']}, {m['parameters']:,} parameters"
                     + (" (random weights)" if m.get("random") else ""))
    lines.append("")
    header = (f"{'model':<14} {'backend':<11} {'thr':>3} {'positions/s':>11} {'nodes/s':>10} "
              f"{'move ms med':>11} {'p95':>8} {'us/node med':>11} {'p95':>8}")
    lines += [header, "-" * len(header)]
    for r in report["results"]:
        backend = r["backend"] + ("" if r["device"] == "cpu" or r["backend"] == "torch-cuda" else f"/{r['device']}")
        lines.append(
            f"{r['label'][:14]:<14} {backend:<11} {r['threads']:>3} {_fmt(r['positions_per_s'], '11.2f')} "
            f"{_fmt(r['nodes_per_s'], '10.1f')} {_fmt(r['move_latency_ms']['median'], '11.2f')} "
            f"{_fmt(r['move_latency_ms']['p95'], '8.2f')} {_fmt(r['per_node_us']['median'], '11.1f')} "
            f"{_fmt(r['per_node_us']['p95'], '8.1f')}")
    for r in report.get("errors", []):
        lines.append(f"{r['label'][:14]:<14} {r['backend']:<11} unavailable: {r['error']}")
    if report.get("comparison"):
        lines += ["", "shared_board vs full attention at equal size (ratio shared / full):"]
        for c in report["comparison"]:
            lines.append(f"  {c['backend']:<11} positions/s {_fmt(c['full_positions_per_s'], '.2f')} -> "
                         f"{_fmt(c['shared_positions_per_s'], '.2f')}  x{_fmt(c['positions_speedup'], '.1f')};  "
                         f"median move latency x{_fmt(c['latency_speedup'], '.1f')} faster")
            if "board_head_positions_per_s" in c:
                lines.append(f"  {'':<11} board_head positions/s {_fmt(c['board_head_positions_per_s'], '.2f')}  "
                             f"x{_fmt(c['board_head_speedup'], '.1f')} of full")
    if report.get("training"):
        t = {r["attention"]: r for r in report["training"]}
        lines.append("")
        lines.append("training (forward + backward + AdamW, action values/s): " + ", ".join(
            f"{a} {_fmt(r['action_values_per_s'], '.0f')}" for a, r in t.items()))
        for layout in ("shared_board", "board_head"):
            if "full" in t and layout in t:
                ratio = t[layout]["action_values_per_s"] / t["full"]["action_values_per_s"]
                lines.append(f"  {layout} / full: x{_fmt(ratio, '.1f')}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from neuralengine.analyse import threads_arg

    parser = argparse.ArgumentParser(
        prog="neuralengine bench",
        description="Speed benchmark: the engine chooses a move in each of a fixed set of positions.")
    parser.add_argument("--weights", help="weights file, DeepMind checkpoint folder or downloaded model name such as 9M (default: the shipped model)")
    parser.add_argument("--backend", default="all",
                        help="all (every available backend), auto, onnx, torch-cpu or torch-cuda (default all)")
    parser.add_argument("--threads", type=threads_arg, default=1, help="CPU threads per backend (default 1)")
    parser.add_argument("--batch-size", type=int, default=256, help="most moves per network call (default 256)")
    parser.add_argument("--positions", type=int, default=None, help="use the first N suite positions (default all)")
    parser.add_argument("--passes", type=int, default=1, help="times each position is played (default 1)")
    parser.add_argument("--suite", help="a FEN file to use instead of the built-in suite")
    parser.add_argument("--compare-attention", action="store_true",
                        help="measure random full and shared_board models of equal size side by side")
    parser.add_argument("--preset", default="9M",
                        help="model size for --compare-attention (tiny, small, 9M, ...; default 9M)")
    parser.add_argument("--train", action="store_true",
                        help="with --compare-attention, also time training steps of both layouts")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--out", help="also write the JSON report to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    return parser


def _backends_for(name: str) -> list[str]:
    if name == "all":
        return available_backends()
    from neuralengine.backends import BACKENDS

    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose all or one of {', '.join(BACKENDS)}")
    return [name]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    err = sys.stderr
    if args.threads < 1 or args.batch_size < 1 or args.passes < 1 or (args.positions is not None and args.positions < 1):
        print("bench: --threads, --batch-size, --passes and --positions must be positive", file=err)
        return 2
    try:
        backends = _backends_for(args.backend)
        positions = load_suite(args.suite)
    except (OSError, ValueError) as exc:
        print(f"bench: {exc}", file=err)
        return 2
    if args.positions is not None:
        positions = positions[:args.positions]
    if not backends:
        print("bench: no backend available: install onnxruntime or torch", file=err)
        return 1

    from neuralengine.weights import WeightsError

    models: list[tuple[str, Path]] = []
    tmp: tempfile.TemporaryDirectory[str] | None = None
    try:
        if args.compare_attention:
            if importlib.util.find_spec("torch") is None:
                print("bench: --compare-attention builds random models and needs PyTorch: "
                      "pip install 'neuralengine[torch]'", file=err)
                return 1
            from neuralengine.config import ATTENTIONS, ConfigError, preset
            from neuralengine.weights import config_from_metadata, read_metadata

            try:
                if args.weights:
                    base = config_from_metadata(read_metadata(args.weights), args.weights)
                    sizes = {"num_layers": base.num_layers, "embed_dim": base.embed_dim,
                             "num_heads": base.num_heads, "widening_factor": base.widening_factor}
                    configs = [type(base)(**sizes, attention=a) for a in ATTENTIONS]
                else:
                    configs = [preset(args.preset, attention=a) for a in ATTENTIONS]
            except (ConfigError, WeightsError) as exc:
                print(f"bench: {exc}", file=err)
                return 2
            tmp = tempfile.TemporaryDirectory(prefix="neuralengine-bench-")
            for cfg in configs:
                if not args.quiet:
                    print(f"bench: building a random {cfg.attention} model ({cfg.num_layers} x {cfg.embed_dim})",
                          file=err)
                models.append((cfg.attention, write_random_model(tmp.name, cfg)))
        else:
            from neuralengine.deepmind import resolve_weights
            from neuralengine.paths import default_weights

            try:
                weights = resolve_weights(args.weights) if args.weights else default_weights()
            except WeightsError as exc:
                print(f"bench: {exc}", file=err)
                return 2
            if not weights.is_file():
                print(f"bench: no weights file at {weights}; pass --weights FILE "
                      "(or --compare-attention for random models)", file=err)
                return 2
            models.append((weights.stem, weights))

        results: list[BackendResult] = []
        errors: list[dict[str, str]] = []
        for label, path in models:
            for backend in backends:
                try:
                    results.append(bench_backend(path, backend, positions, args.threads, args.batch_size,
                                                 args.passes, label, progress=not args.quiet))
                except (WeightsError, ValueError, RuntimeError, OSError) as exc:
                    errors.append({"label": label, "backend": backend, "error": str(exc)})
        training = None
        if args.compare_attention and args.train:
            if not args.quiet:
                print("bench: timing training steps of both layouts", file=err)
            training = training_comparison(configs, positions, args.threads)
        record = run_record(None if args.compare_attention else models[0][1])
    finally:
        if tmp is not None:
            tmp.cleanup()

    nodes = sum(results[0].nodes) // args.passes if results else 0
    report: dict[str, Any] = {
        "suite": {"positions": len(positions), "nodes": nodes, "passes": args.passes,
                  "file": Path(args.suite).name if args.suite else "built-in"},
        "results": [r.to_dict() for r in results],
        "errors": errors,
        "record": record,
    }
    if args.compare_attention:
        comparison = []
        by = {(r.label, r.backend): r for r in results}
        for backend in backends:
            full, shared = by.get(("full", backend)), by.get(("shared_board", backend))
            if full is None or shared is None:
                continue
            fd, sd = full.to_dict(), shared.to_dict()
            entry = {
                "backend": backend,
                "full_positions_per_s": full.positions_per_s,
                "shared_positions_per_s": shared.positions_per_s,
                "positions_speedup": shared.positions_per_s / full.positions_per_s,
                "nodes_speedup": shared.nodes_per_s / full.nodes_per_s,
                "latency_speedup": fd["move_latency_ms"]["median"] / sd["move_latency_ms"]["median"],
            }
            head = by.get(("board_head", backend))
            if head is not None:
                entry["board_head_positions_per_s"] = head.positions_per_s
                entry["board_head_speedup"] = head.positions_per_s / full.positions_per_s
            comparison.append(entry)
        report["comparison"] = comparison
        if training:
            report["training"] = training
    report = jsonable(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
