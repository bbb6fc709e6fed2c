"""``neuralengine train pgn_lm``: a character-level GPT trained on move transcripts.

The model is nanoGPT's architecture (pre-norm blocks, causal multi-head attention, GELU MLP, learned
positions, tied embedding and head, optional biases): the architecture the engine's ``pgn_lm`` kind plays. This
module holds the PyTorch training copy of it; the engine never imports it. The data are the one-line
transcripts of ``neuralengine datagen --pgn`` (``;1.e4 e5 2.Nf3 ...``, see
:mod:`neuralengine.data.transcripts`).

* Each game is one training sequence: its transcript and a closing space (every move is then followed by the
  separator the engine scores with it), cut to ``--block-size`` + 1 characters. A batch holds games of similar
  length, padded on the right; the padding is left out of the loss, and with causal attention it never
  affects a real character. Games always start at position 0, as when the model plays.
* Next-character cross-entropy, AdamW (no decay on norms and the position embedding), linear warm-up then a
  cosine schedule, gradient clipping.
* ``--watch``: the data files are re-read when they have grown, so training can start while the games are
  still being generated.
* The run folder gets ``checkpoint.safetensors`` (model and optimiser; no pickle), ``metrics.csv`` (training
  loss, held-out loss, held-out accuracy on the first character of each move, throughput), ``metrics.png``
  and the model in the ``pgn_lm`` weights format, ``model.safetensors``. A rerun with the same ``--out``
  resumes from the checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from neuralengine.atomic import atomic_path, write_text

from neuralengine.textlm.transcript import CHESS_GPT_VOCABULARY

#: Chess-GPT's 32 characters; a character's index is its token.
VOCAB = "".join(CHESS_GPT_VOCABULARY)
STOI = {c: i for i, c in enumerate(VOCAB)}

CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "model.safetensors"
FIELDS = ["step", "train_loss", "lr", "chars", "chars_per_s", "games_in_data", "elapsed", "test_loss",
          "test_move_start_accuracy"]


def encode(text: str) -> list[int]:
    """Token ids of ``text``; :class:`KeyError` for a character outside the vocabulary."""
    return [STOI[c] for c in text]


# ---------------------------------------------------------------------------
# The model (training copy)
# ---------------------------------------------------------------------------


@dataclass
class GPTConfig:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 1023
    bias: bool = False
    vocab_size: int = len(VOCAB)
    dropout: float = 0.0


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        d = cfg.n_embd
        self.n_head = cfg.n_head
        self.ln_1 = nn.LayerNorm(d, bias=cfg.bias)
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(d, 3 * d, bias=cfg.bias)
        self.attn.c_proj = nn.Linear(d, d, bias=cfg.bias)
        self.ln_2 = nn.LayerNorm(d, bias=cfg.bias)
        self.mlp = nn.Module()
        self.mlp.c_fc = nn.Linear(d, 4 * d, bias=cfg.bias)
        self.mlp.c_proj = nn.Linear(4 * d, d, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn.c_proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    """nanoGPT's GPT; parameter names match its state dict (``transformer.h.0.attn.c_attn.weight``...)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
            ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, return_hidden: bool = False,
                edit: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> Any:
        """Logits ``[B, T, vocab]``; with ``return_hidden`` also the residual stream after the embedding and
        after every block (``n_layer + 1`` tensors ``[B, T, d]``, index ``i`` after block ``i - 1``).
        ``edit(i, x)``, when given, replaces the residual stream at index ``i`` before the network goes on
        (the probes' interventions)."""
        t = idx.shape[1]
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(t, device=idx.device))
        if edit is not None:
            x = edit(0, x)
        hidden = [x]
        for i, block in enumerate(self.transformer.h, start=1):
            x = block(x)
            if edit is not None:
                x = edit(i, x)
            hidden.append(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        return (logits, hidden) if return_hidden else logits

    def extend(self, idx: torch.Tensor, past: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
               edit: Callable[[int, torch.Tensor], torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Read ``idx`` ``[B, n]`` after the keys and values ``past`` of earlier characters (batch 1, shared by
        every row); returns the logits and the keys and values of everything read. For the probes'
        interventions, which edit the stream at one character and score the moves that follow it."""
        b, n = idx.shape
        start = past[0][0].shape[2] if past else 0
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(start, start + n, device=idx.device))
        if edit is not None:
            x = edit(0, x)
        mask = torch.ones(n, start + n, dtype=torch.bool, device=idx.device).tril(diagonal=start)
        kept = []
        for i, block in enumerate(self.transformer.h):
            d = x.shape[-1]
            q, k, v = block.attn.c_attn(block.ln_1(x)).split(d, dim=2)
            q, k, v = (z.view(b, n, block.n_head, d // block.n_head).transpose(1, 2) for z in (q, k, v))
            if past:
                k = torch.cat([past[i][0].expand(b, -1, -1, -1), k], dim=2)
                v = torch.cat([past[i][1].expand(b, -1, -1, -1), v], dim=2)
            kept.append((k, v))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + block.attn.c_proj(y.transpose(1, 2).reshape(b, n, d))
            x = x + block.mlp.c_proj(F.gelu(block.mlp.c_fc(block.ln_2(x))))
            if edit is not None:
                x = edit(i + 1, x)
        return self.lm_head(self.transformer.ln_f(x)), kept

    def nanogpt_state(self) -> dict[str, np.ndarray]:
        """The tensors under nanoGPT's names (``lm_head.weight`` is tied, so it is left out)."""
        return {k: v.detach().float().cpu().numpy().copy() for k, v in self.state_dict().items()
                if k != "lm_head.weight"}

    def model_args(self) -> dict[str, Any]:
        return asdict(self.cfg)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


class TranscriptData:
    """The games of transcript files as token arrays (each with its closing space), re-read on growth."""

    def __init__(self, paths: Sequence[Path], block_size: int) -> None:
        self.paths = list(paths)
        self.block_size = block_size
        self.games: list[np.ndarray] = []
        self._sizes: dict[Path, int] = {}
        self._offsets: dict[Path, int] = {p: 0 for p in self.paths}
        self.skipped = 0
        self.refresh()

    def refresh(self) -> int:
        """Read the lines appended since the last call; returns how many games were added."""
        from neuralengine.data.transcripts import parse_line

        added = 0
        for path in self.paths:
            size = path.stat().st_size if path.exists() else 0
            if size <= self._offsets[path]:
                continue
            with open(path, "rb") as fh:
                fh.seek(self._offsets[path])
                raw = fh.read(size - self._offsets[path])
            end = raw.rfind(b"\n") + 1  # a line still being written waits for the next call
            self._offsets[path] += end
            for line in raw[:end].decode("utf-8").splitlines():
                game = parse_line(line)
                if game is None:
                    continue
                try:
                    tokens = encode(game.text + " ")
                except KeyError:
                    self.skipped += 1
                    continue
                self.games.append(np.asarray(tokens[: self.block_size + 1], dtype=np.int64))
                added += 1
        return added

    def __len__(self) -> int:
        return len(self.games)

    def batch(self, rng: random.Random, chars: int) -> tuple[torch.Tensor, torch.Tensor]:
        """About ``chars`` target characters of games of similar length: inputs and targets (-1 = padding)."""
        anchor = self.games[rng.randrange(len(self.games))]
        n = len(anchor)
        picked = [anchor]
        total = n - 1
        tries = 0
        while total < chars and tries < 64:
            tries += 1
            g = self.games[rng.randrange(len(self.games))]
            if abs(len(g) - n) <= max(32, n // 4) or tries > 48:
                picked.append(g)
                total += len(g) - 1
        return pad(picked)


def pad(games: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(g) for g in games) - 1
    x = np.zeros((len(games), width), dtype=np.int64)
    y = np.full((len(games), width), -1, dtype=np.int64)
    for i, g in enumerate(games):
        x[i, : len(g) - 1] = g[:-1]
        y[i, : len(g) - 1] = g[1:]
    return torch.from_numpy(x), torch.from_numpy(y)


@torch.no_grad()
def evaluate(model: GPT, games: Sequence[np.ndarray], batch: int = 16) -> dict[str, float]:
    """Held-out loss per character, and the accuracy on the first character of each move (the characters
    after a space or a move number's dot, where the model chooses)."""
    model.eval()
    loss_sum, count, hits, starts = 0.0, 0, 0, 0
    dot, space = STOI["."], STOI[" "]
    for i in range(0, len(games), batch):
        x, y = pad(games[i : i + batch])
        logits = model(x)
        mask = y >= 0
        loss_sum += float(F.cross_entropy(logits[mask], y[mask], reduction="sum"))
        count += int(mask.sum())
        choice = mask & ((x == dot) | (x == space))
        hits += int((logits.argmax(-1)[choice] == y[choice]).sum())
        starts += int(choice.sum())
    model.train()
    return {"test_loss": loss_sum / max(count, 1), "test_move_start_accuracy": hits / max(starts, 1)}


# ---------------------------------------------------------------------------
# Checkpoints and export
# ---------------------------------------------------------------------------


def save_checkpoint(run: Path, model: GPT, opt: torch.optim.Optimizer, info: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors = {f"model/{k}": v.detach().float().contiguous() for k, v in model.state_dict().items()
               if k != "lm_head.weight"}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            for key, val in opt.state.get(p, {}).items():
                if torch.is_tensor(val):
                    tensors[f"opt/{names[id(p)]}/{key}"] = val.detach().float().contiguous().reshape(val.shape)
    with atomic_path(run / CHECKPOINT) as tmp:
        save_file(tensors, str(tmp), metadata={"info": json.dumps(info)})
    write_text(run / "checkpoint.json", json.dumps(info, indent=2))


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        info = json.loads(fh.metadata()["info"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    return info, tensors


def restore(model: GPT, opt: torch.optim.Optimizer | None, tensors: dict[str, torch.Tensor]) -> None:
    state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state)
    if opt is None:
        return
    params = dict(model.named_parameters())
    for name, p in params.items():
        st = {key.split("/")[-1]: v for key, v in tensors.items() if key.startswith(f"opt/{name}/")}
        if st:
            if "step" in st:
                st["step"] = st["step"].reshape(())
            opt.state[p] = st


def model_from_checkpoint(path: Path) -> GPT:
    """The model of a run folder or checkpoint file (for evaluation and probes)."""
    path = path / CHECKPOINT if path.is_dir() else path
    info, tensors = load_checkpoint(path)
    model = GPT(GPTConfig(**info["model_args"]))
    restore(model, None, tensors)
    return model.eval()


def text_config(model: GPT) -> Any:
    from neuralengine.config import TextModelConfig

    c = model.cfg
    return TextModelConfig(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, block_size=c.block_size,
                           vocabulary=CHESS_GPT_VOCABULARY, bias=c.bias)


def export_weights(model: GPT, path: Path, provenance: dict[str, Any]) -> None:
    """The model in the engine's ``pgn_lm`` weights format."""
    from neuralengine.weights import save_text_weights

    save_text_weights(path, text_config(model), model.nanogpt_state(), provenance)


def model_from_weights(path: str | Path) -> GPT:
    """A ``pgn_lm`` weights file as this PyTorch module (for probes, which edit the residual stream)."""
    from neuralengine.weights import load_text_weights

    weights = load_text_weights(path)
    c = weights.config
    if tuple(c.vocabulary) != CHESS_GPT_VOCABULARY:
        raise ValueError("only models with Chess-GPT's vocabulary are supported here")
    model = GPT(GPTConfig(c.n_layer, c.n_head, c.n_embd, c.block_size, c.bias))
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in weights.tensors.items()}
    state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state)
    return model.eval()


def load_any(path: str | Path) -> GPT:
    """A run folder, a checkpoint or a ``pgn_lm`` weights file as this PyTorch module."""
    p = Path(path)
    if p.is_dir() or p.name == CHECKPOINT:
        return model_from_checkpoint(p)
    return model_from_weights(p)


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


@dataclass
class PgnTrainConfig:
    data: tuple[str, ...] = ()
    test_data: tuple[str, ...] = ()
    out: str = ""
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 1023
    bias: bool = False
    steps: int = 20_000
    batch_chars: int = 8192
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 200
    weight_decay: float = 0.1
    clip: float = 1.0
    threads: int = 0
    eval_every: int = 250
    eval_games: int = 200
    log_every: int = 25
    checkpoint_every: int = 250
    time_limit: float = 0.0
    watch: bool = False
    seed: int = 1


def lr_at(cfg: PgnTrainConfig, step: int, elapsed: float = 0.0) -> float:
    """Linear warm-up, then cosine down to ``min_lr_ratio``; with a time limit the schedule follows whichever
    of steps and time runs out first, so a run cut by ``--time-limit`` still ends annealed."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    if cfg.time_limit:
        t = max(t, min(1.0, elapsed / (cfg.time_limit * 60)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def _files(items: Sequence[str], split: str) -> list[Path]:
    out: list[Path] = []
    for item in items:
        p = Path(item)
        out.extend(sorted(p.glob(f"{split}*.txt")) if p.is_dir() else [p])
    return out


def train(cfg: PgnTrainConfig, progress: bool = True) -> dict[str, Any]:
    from neuralengine.progress import Progress
    from neuralengine.train.metrics import rewrite_metrics  # noqa: F401  (same semantics; own columns below)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    train_files = _files(cfg.data, "train")
    test_files = _files(cfg.test_data, "test") if cfg.test_data else [
        p.with_name(p.name.replace("train", "test", 1)) for p in train_files if "train" in p.name]
    data = TranscriptData(train_files, cfg.block_size)
    test = TranscriptData([p for p in test_files if p.exists()], cfg.block_size)
    if not len(data):
        raise ValueError(f"no games in {', '.join(map(str, train_files)) or 'the data'}")
    model_cfg = GPTConfig(cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.bias)
    torch.manual_seed(cfg.seed)
    model = GPT(model_cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wpe" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "wpe" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    step, chars_seen, elapsed = 0, 0, 0.0
    metrics = run / "metrics.csv"
    if (run / CHECKPOINT).exists():
        info, tensors = load_checkpoint(run / CHECKPOINT)
        if info["model_args"] != model.model_args():
            raise ValueError(f"{run} holds a run of another architecture: {info['model_args']}")
        restore(model, opt, tensors)
        step, chars_seen, elapsed = info["step"], info["chars"], info["elapsed"]
        _cut_metrics(metrics, step)
        print(f"train pgn_lm: resumed at step {step}", file=sys.stderr)
    elif metrics.exists():
        metrics.unlink()
    if not metrics.exists():
        with open(metrics, "w", newline="") as fh:
            csv.writer(fh).writerow(FIELDS)
    write_text(run / "config.json", json.dumps(asdict(cfg), indent=2))
    rng = random.Random(f"{cfg.seed}/{step}")
    test_games = test.games[: cfg.eval_games]
    bar = Progress("train pgn_lm", total=cfg.steps, unit="steps", enabled=progress)
    bar.update(step)
    start = time.monotonic() - elapsed
    window_loss, window_n, window_chars, window_t = 0.0, 0, 0, time.monotonic()
    last: dict[str, float] = {}
    model.train()
    while step < cfg.steps:
        if cfg.time_limit and time.monotonic() - start >= cfg.time_limit * 60:
            break
        for group in opt.param_groups:
            group["lr"] = lr_now = lr_at(cfg, step, time.monotonic() - start)
        x, y = data.batch(rng, cfg.batch_chars)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1), ignore_index=-1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        step += 1
        n_chars = int((y >= 0).sum())
        chars_seen += n_chars
        window_loss += loss.item()
        window_n += 1
        window_chars += n_chars
        bar.update(1, postfix=f"loss {loss.item():.3f} games {len(data)}")
        row: dict[str, Any] = {}
        if step % cfg.log_every == 0 or step == cfg.steps:
            now = time.monotonic()
            row.update(step=step, train_loss=round(window_loss / window_n, 5), lr=f"{lr_now:.3g}",
                       chars=chars_seen, chars_per_s=round(window_chars / max(now - window_t, 1e-9)),
                       games_in_data=len(data), elapsed=round(now - start, 1))
            window_loss, window_n, window_chars, window_t = 0.0, 0, 0, now
        if test_games and (step % cfg.eval_every == 0 or step == cfg.steps):
            last = evaluate(model, test_games)
            row.update(step=step, **{k: round(v, 5) for k, v in last.items()})
        if row:
            with open(metrics, "a", newline="") as fh:
                csv.writer(fh).writerow([row.get(f, "") for f in FIELDS])
        if step % cfg.checkpoint_every == 0:
            _save_all(run, model, opt, cfg, step, chars_seen, time.monotonic() - start, len(data))
            if cfg.watch:
                data.refresh()
                if len(test_games) < cfg.eval_games:
                    test.refresh()
                    test_games = test.games[: cfg.eval_games]
    bar.close()
    if test_games:
        last = evaluate(model, test_games)
    _save_all(run, model, opt, cfg, step, chars_seen, time.monotonic() - start, len(data))
    return {"weights": str(run / WEIGHTS), "step": step, "final_metrics": last, "games": len(data)}


def _save_all(run: Path, model: GPT, opt: torch.optim.Optimizer, cfg: PgnTrainConfig, step: int, chars: int,
              elapsed: float, games: int) -> None:
    info = {"step": step, "chars": chars, "elapsed": elapsed, "games": games, "model_args": model.model_args()}
    save_checkpoint(run, model, opt, info)
    try:
        export_weights(model, run / WEIGHTS, {"trained_by": "neuralengine train pgn_lm", "step": step,
                                              "chars": chars, "games": games})
    except Exception as exc:  # noqa: BLE001  the checkpoint is saved; the export is redone from it
        print(f"train pgn_lm: {WEIGHTS} not written: {exc}", file=sys.stderr)
    from neuralengine.train.plot import NO_MATPLOTLIB

    if not plot_metrics(run / "metrics.csv", run / "metrics.png") and step == cfg.steps:
        print(NO_MATPLOTLIB, file=sys.stderr)


def _cut_metrics(path: Path, up_to: int) -> None:
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= up_to]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(keep)


def plot_metrics(csv_path: Path, png_path: Path) -> bool:
    """Training and held-out loss (left), held-out accuracy on the first character of each move (right)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    try:
        tr = [(int(r["step"]), float(r["train_loss"])) for r in rows if r.get("train_loss")]
        ev = [(int(r["step"]), float(r["test_loss"]), float(r["test_move_start_accuracy"]))
              for r in rows if r.get("test_loss")]
        ax1.plot([a for a, _ in tr], [b for _, b in tr], label="train loss")
        if ev:
            ax1.plot([e[0] for e in ev], [e[1] for e in ev], "o-", label="held-out loss")
            ax2.plot([e[0] for e in ev], [e[2] for e in ev], "o-", label="first character of a move")
            ax2.legend()
        ax1.set_xlabel("step")
        ax1.set_ylabel("cross-entropy per character (nats)")
        ax1.legend()
        ax2.set_xlabel("step")
        ax2.set_ylabel("held-out accuracy")
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(png_path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
    return True


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neuralengine train pgn_lm",
                                description="Train a character-level GPT (nanoGPT architecture) on move transcripts "
                                            "(neuralengine datagen --pgn).")
    p.add_argument("--data", nargs="+", help="transcript files or folders (train*.txt); needed unless --export")
    p.add_argument("--test-data", nargs="+", help="held-out transcripts (default: test*.txt beside the data)")
    p.add_argument("--out", required=True, help="run folder (resumed when it holds a checkpoint)")
    p.add_argument("--layers", dest="n_layer", type=int, default=4)
    p.add_argument("--heads", dest="n_head", type=int, default=4)
    p.add_argument("--dim", dest="n_embd", type=int, default=128)
    p.add_argument("--block-size", type=int, default=1023, help="context in characters (default 1023)")
    p.add_argument("--bias", action="store_true", help="biases in the Linears and LayerNorms")
    p.add_argument("--steps", type=int, default=20_000, help="steps of the cosine schedule")
    p.add_argument("--batch-chars", type=int, default=8192, help="target characters per step")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch default)")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-games", type=int, default=200)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--time-limit", type=float, default=0.0, help="stop after this many minutes (0: none)")
    p.add_argument("--watch", action="store_true", help="re-read the data files as they grow (at checkpoints)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--export", action="store_true",
                   help="only write model.safetensors (and metrics.png) from the checkpoint in --out, then stop")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``neuralengine train pgn_lm``."""
    args = build_parser().parse_args(argv)
    if args.export:
        run = Path(args.out)
        if not (run / CHECKPOINT).exists():
            print(f"neuralengine train pgn_lm: no {CHECKPOINT} in {run}", file=sys.stderr)
            return 2
        info, _ = load_checkpoint(run / CHECKPOINT)
        export_weights(model_from_checkpoint(run), run / WEIGHTS,
                       {"trained_by": "neuralengine train pgn_lm", "step": info["step"], "chars": info["chars"],
                        "games": info.get("games")})
        plot_metrics(run / "metrics.csv", run / "metrics.png")
        print(f"wrote {run / WEIGHTS} (step {info['step']})")
        return 0
    if args.n_embd % args.n_head:
        print("neuralengine train pgn_lm: --dim must be a multiple of --heads", file=sys.stderr)
        return 2
    if not args.data:
        print("neuralengine train pgn_lm: --data is needed", file=sys.stderr)
        return 2
    names = {f.name for f in fields(PgnTrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    for key in ("data", "test_data"):
        if key in values:
            values[key] = tuple(values[key])
    for path in values["data"]:
        if not Path(path).exists():
            print(f"neuralengine train pgn_lm: no such file or folder: {path}", file=sys.stderr)
            return 2
    try:
        result = train(PgnTrainConfig(**values), progress=not args.quiet)
    except ValueError as exc:
        print(f"neuralengine train pgn_lm: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0
