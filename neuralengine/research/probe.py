"""``neuralengine probe``: what does the network know about the board?

Positions (shards, annotated text, PGN, EPD/FEN) go through the network with
one candidate move each (action-value models); the residual stream after the
embedding and after every block is read at two places:

* the **readout** token: the move token of an action-value model, the last
  token of a state-value or behavioural-cloning model (BOS for the
  ``board_head`` layout, which has no move token);
* a **square's own token**: the FEN board token of that square (a few random
  squares per position).

Linear probes then learn board facts from those states (see
:mod:`neuralengine.research.features`) on the positions of some games and are
scored on the positions of the other games, for the model and for a randomly
initialised network of the same shape, next to a majority-class (or mean)
predictor. An intervention along the "empty square" probe direction tests
whether the network uses what the probe finds.

Writes ``probes.json`` and ``probes.png`` (layer × feature heatmaps) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import chess
import numpy as np

from neuralengine.encoding import ACTIONS, MOVE_TO_ACTION, expected_win_prob, legal_actions, tokenize_board
from neuralengine.research import features as F

#: Feature families that ``--features`` can name.
FAMILIES = ("piece3", "piece13", "attacked", "in_check", "material", "win_prob", "move")


class ProbeError(Exception):
    """A problem with the inputs or the options, reported without a traceback."""


# ---------------------------------------------------------------------------
# Positions
# ---------------------------------------------------------------------------


@dataclass
class Sample:
    """One position, the game it came from and, when the data has them, its moves' scores."""

    board: chess.Board
    game: str
    scores: dict[str, float] | None = None

    @property
    def best_score(self) -> float:
        return max(self.scores.values()) if self.scores else float("nan")


PGN_SUFFIXES = (".pgn",)
SHARD_SUFFIX = ".neav"
_KNOWN = (".neav", ".pgn", ".txt", ".epd", ".fen")


def _base_name(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".gz", ".xz"):
        name = name.removesuffix(suffix)
    return name


def _expand(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and _base_name(p).endswith(_KNOWN))
            if not found:
                raise ProbeError(f"no .neav, .txt, .pgn, .epd or .fen files in {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ProbeError(f"no such file or folder: {path}")
    return files


def _is_action_value_text(path: Path) -> bool:
    """Sniff the first position line: ``FEN<TAB>move:score ...`` or a plain position."""
    from neuralengine.data.text import open_text

    with open_text(path) as fh:
        for line in fh:
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            _, tab, rest = text.partition("\t")
            first = rest.split()[0] if rest.split() else ""
            return bool(tab) and ":" in first
    return False


def iter_file_games(path: Path) -> Iterator[tuple[str, list[tuple[chess.Board, dict[str, float] | None]]]]:
    """Yield ``(game_key, [(board, scores or None), ...])`` for every game of one file."""
    name = _base_name(path)
    if name.endswith(SHARD_SUFFIX):
        from neuralengine.data.shards import Shard, ShardError

        try:
            shard = Shard(path)
        except ShardError as exc:
            raise ProbeError(str(exc)) from None
        current: int | None = None
        game: list[tuple[chess.Board, dict[str, float] | None]] = []
        for i in range(len(shard)):
            pos = shard[i]
            if current is not None and pos.game_id != current and game:
                yield f"{path.parent}/{current}", game
                game = []
            current = pos.game_id
            board = chess.Board(F.fen_from_tokens(pos.board))
            scores = {ACTIONS[int(a)]: float(p) for a, p in zip(pos.actions, pos.win_probs)}
            game.append((board, scores))
        if game:
            yield f"{path.parent}/{current}", game
        return
    if name.endswith(PGN_SUFFIXES):
        from neuralengine.data.datagen import iter_pgn_games

        for gid, boards, problem in iter_pgn_games(path):
            if problem is None:
                yield gid, [(b, None) for b in boards]
        return
    if _is_action_value_text(path):
        from neuralengine.data.text import iter_games

        for key, lines in iter_games([path]):
            game = []
            for fen, moves, probs in lines:
                game.append((chess.Board(fen), dict(zip(moves, (float(p) for p in probs)))))
            yield key, game
        return
    from neuralengine.data.datagen import iter_epd_games

    for gid, boards, problem in iter_epd_games(path):
        if problem is None:
            yield gid, [(b, None) for b in boards]


def load_samples(inputs: Sequence[Path], limit: int, per_game: int, seed: int,
                 progress: Callable[[int], None] | None = None) -> list[Sample]:
    """Up to ``limit`` positions with legal moves, at most ``per_game`` (0: all) drawn at random from each game."""
    samples: list[Sample] = []
    for path in _expand(inputs):
        for key, game in iter_file_games(path):
            eligible = [(b, s) for b, s in game if b.is_valid() and any(b.legal_moves)]
            if per_game and len(eligible) > per_game:
                keep = sorted(random.Random(f"{seed}/{key}").sample(range(len(eligible)), per_game))
                eligible = [eligible[i] for i in keep]
            for board, scores in eligible[: limit - len(samples)]:
                samples.append(Sample(board, key, scores))
                if progress is not None:
                    progress(1)
            if len(samples) >= limit:
                return samples
    return samples


def split_by_game(samples: Sequence[Sample], test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and held-out positions; a game's positions all go to one side."""
    games = sorted({s.game for s in samples})
    if len(games) < 2:
        raise ProbeError(f"the positions come from {len(games)} game(s); a held-out split by game needs at least 2")
    random.Random(seed).shuffle(games)
    n_test = min(max(1, round(test_fraction * len(games))), len(games) - 1)
    test_games = set(games[:n_test])
    is_test = np.array([s.game in test_games for s in samples])
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def choose_move(sample: Sample, rule: str, rng: random.Random) -> chess.Move:
    """The candidate move shown to an action-value model: random, or the data's best."""
    legal, _ = legal_actions(sample.board)
    if rule == "best" and sample.scores:
        scored = [m for m in legal if m.uci() in sample.scores]
        if scored:
            return max(scored, key=lambda m: sample.scores[m.uci()])
    return rng.choice(legal)


# ---------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------


@dataclass
class Feature:
    """One probed quantity: its labels, where it is read, and how it is scored."""

    name: str
    site: str               # "square" or the readout token ("move", "last" or "bos")
    task: str               # "classification" or "regression"
    labels: np.ndarray      # [P] or [P, 64] (readout, one probe per square) or [P, S] (square site)
    description: str
    classes: tuple[str, ...] = ()
    per_square: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def build_features(samples: Sequence[Sample], moves: Sequence[chess.Move | None], squares: np.ndarray,
                   readout: str, families: Sequence[str]) -> list[Feature]:
    """Labels for every feature family asked for; ``squares`` [P, S] are the sampled square tokens."""
    p3 = np.stack([F.piece3(s.board) for s in samples])
    p13 = np.stack([F.piece13(s.board) for s in samples])
    mine = np.stack([F.attacked(s.board, True) for s in samples])
    theirs = np.stack([F.attacked(s.board, False) for s in samples])
    rows = np.arange(len(samples))[:, None]
    out: list[Feature] = []
    yes_no = ("no", "yes")
    per_square = [
        ("piece3", "piece3", p3, F.PIECE3_CLASSES, "empty / the side to move's piece / the opponent's piece"),
        ("piece13", "piece13", p13, F.PIECE13_CLASSES, "empty or one of 12 pieces (mine/theirs × 6 types)"),
        ("attacked", "attacked_by_me", mine, yes_no, "square attacked by the side to move"),
        ("attacked", "attacked_by_them", theirs, yes_no, "square attacked by the opponent"),
    ]
    for family, name, labels, classes, text in per_square:
        if family in families:
            out.append(Feature(f"square:{name}", "square", "classification", labels[rows, squares],
                               text + ", at that square's own token", classes))
    for family, name, labels, classes, text in per_square:
        if family in families:
            out.append(Feature(f"{readout}:{name}", readout, "classification", labels,
                               text + f", every square read from the {readout} token (one probe per square)",
                               classes, per_square=True))
    if "in_check" in families:
        out.append(Feature(f"{readout}:in_check", readout, "classification",
                           np.array([s.board.is_check() for s in samples], dtype=np.int64),
                           "the side to move is in check", yes_no))
    if "material" in families:
        out.append(Feature(f"{readout}:material", readout, "regression",
                           np.array([F.material_balance(s.board) for s in samples], dtype=np.float64),
                           "material balance for the side to move (1/3/3/5/9)"))
    if "win_prob" in families:
        best = np.array([s.best_score for s in samples], dtype=np.float64)
        if np.isfinite(best).any():  # positions without scores (PGN, EPD) are left out of this probe
            out.append(Feature(f"{readout}:win_prob", readout, "regression", best,
                               "Stockfish's win probability of the position (best move's score in the data)"))
    if "move" in families and readout == "move" and moves and all(m is not None for m in moves):
        facts = [F.move_facts(s.board, m) for s, m in zip(samples, moves)]
        for name, attr, text in (("captures", "capture", "the candidate move captures"),
                                 ("gives_check", "check", "the candidate move gives check"),
                                 ("en_prise", "en_prise", "the candidate move leaves the moved piece en prise")):
            out.append(Feature(f"move:{name}", "move", "classification",
                               np.array([getattr(f, attr) for f in facts], dtype=np.int64), text, yes_no))
    return out


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------


@dataclass
class States:
    readout: np.ndarray   # [P, L+1, D]
    squares: np.ndarray   # [P, S, L+1, D]


def gather_states(model: Any, samples: Sequence[Sample], moves: Sequence[chess.Move | None], squares: np.ndarray,
                  batch_size: int, device: str, progress: Any = None) -> States:
    import torch

    from neuralengine.research.activations import collect_states

    readout, at_squares = [], []
    for lo in range(0, len(samples), batch_size):
        hi = min(lo + batch_size, len(samples))
        boards = torch.from_numpy(np.stack([tokenize_board(s.board) for s in samples[lo:hi]]).astype(np.int64))
        actions = None
        if moves[lo] is not None:
            actions = torch.tensor([MOVE_TO_ACTION[m.uci()] for m in moves[lo:hi]], dtype=torch.long).to(device)
        r, q, _ = collect_states(model, boards.to(device), actions, torch.from_numpy(squares[lo:hi]).to(device))
        readout.append(r.float().cpu().numpy())
        at_squares.append(q.float().cpu().numpy())
        if progress is not None:
            progress.update(hi - lo)
    return States(np.concatenate(readout), np.concatenate(at_squares))


# ---------------------------------------------------------------------------
# Probing
# ---------------------------------------------------------------------------


def _design(feature: Feature, states: States, layer: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and labels of one feature at one layer for the positions ``rows``."""
    if feature.site == "square":
        x = states.squares[rows, :, layer].reshape(-1, states.squares.shape[-1])
        return x, feature.labels[rows].reshape(-1)
    return states.readout[rows, layer], feature.labels[rows]


def _scored(feature: Feature, rows: np.ndarray) -> np.ndarray:
    """The rows whose label is known (a regression label may be NaN: no score in the data)."""
    return rows[np.isfinite(feature.labels[rows])]


def baseline_score(feature: Feature, squares: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    """Majority class (per square, for square features) or the training mean, scored on the test set."""
    from neuralengine.research.linear import accuracy, majority_labels, r2_score

    if feature.task == "regression":
        train, test = _scored(feature, train), _scored(feature, test)
        y_test = feature.labels[test]
        return r2_score(np.full(len(y_test), feature.labels[train].mean()), y_test)
    if feature.site == "square":
        y_train, y_test = feature.labels[train].reshape(-1), feature.labels[test].reshape(-1)
        sq_train, sq_test = squares[train].reshape(-1), squares[test].reshape(-1)
        overall = int(np.bincount(y_train, minlength=feature.num_classes).argmax())
        per_square = np.full(64, overall)
        for sq in np.unique(sq_train):
            per_square[sq] = np.bincount(y_train[sq_train == sq], minlength=feature.num_classes).argmax()
        return accuracy(per_square[sq_test], y_test)
    majority = majority_labels(feature.labels[train], feature.num_classes)
    y_test = feature.labels[test]
    pred = np.broadcast_to(majority, y_test.shape) if y_test.ndim == 2 else np.full(len(y_test), majority[0])
    return accuracy(pred, y_test)


def probe_score(feature: Feature, states: States, layer: int, train: np.ndarray, test: np.ndarray,
                l2: float, max_iter: int) -> dict[str, float]:
    """Held-out score of a probe for ``feature`` at ``layer``: ``score`` is accuracy or R²."""
    from neuralengine.research.linear import accuracy, balanced_accuracy, fit_logistic, fit_ridge, r2_score

    if feature.task == "regression":
        train, test = _scored(feature, train), _scored(feature, test)
    x_train, y_train = _design(feature, states, layer, train)
    x_test, y_test = _design(feature, states, layer, test)
    if feature.task == "regression":
        probe = fit_ridge(x_train, y_train, l2)
        return {"score": r2_score(probe.predict(x_test), y_test)}
    probe = fit_logistic(x_train, y_train, feature.num_classes, l2, max_iter)
    pred = probe.predict(x_test)
    pred = pred[:, 0] if y_test.ndim == 1 else pred
    return {"score": accuracy(pred, y_test), "balanced": balanced_accuracy(pred, y_test)}


# ---------------------------------------------------------------------------
# Intervention
# ---------------------------------------------------------------------------


@dataclass
class EmptyProbe:
    """Binary probe "this square token's square is empty" at one layer, in raw activation units."""

    direction: np.ndarray   # g: logit(empty) - logit(occupied) = g · x + c
    offset: float
    margin: float           # target of g · x + c after an edit: typical for really empty squares
    accuracy: float


def fit_empty_probe(states: States, squares: np.ndarray, piece3: np.ndarray, layer: int, train: np.ndarray,
                    test: np.ndarray, l2: float, max_iter: int) -> EmptyProbe:
    from neuralengine.research.linear import accuracy, fit_logistic

    rows = np.arange(len(piece3))[:, None]
    empty = (piece3[rows, squares] == F.EMPTY).astype(np.int64)
    d = states.squares.shape[-1]
    x_train = states.squares[train, :, layer].reshape(-1, d)
    y_train = empty[train].reshape(-1)
    probe = fit_logistic(x_train, y_train, 2, l2, max_iter)
    g, c = probe.raw_direction(0, 1, 0)
    margins = x_train.astype(np.float64) @ g + c
    really_empty = margins[y_train == 1]
    margin = max(1.0, float(np.median(really_empty))) if len(really_empty) else 1.0
    x_test = states.squares[test, :, layer].reshape(-1, d)
    acc = accuracy(probe.predict(x_test)[:, 0], empty[test].reshape(-1))
    return EmptyProbe(g, c, margin, acc)


def removal_candidates(board: chess.Board) -> list[tuple[int, chess.Board]]:
    """Squares whose (non-king) piece can be taken off, leaving a legal position with legal moves."""
    out = []
    for square, piece in board.piece_map().items():
        if piece.piece_type == chess.KING:
            continue
        edited = board.copy(stack=False)
        edited.remove_piece_at(square)
        edited = chess.Board(edited.fen())  # drops castling rights and en-passant squares that lapsed
        if edited.is_valid() and any(edited.legal_moves):
            out.append((square, edited))
    return out


def _move_scores(model: Any, board: chess.Board, device: str, hook: Any = None) -> tuple[list[str], np.ndarray]:
    """Legal moves (UCI) and the network's score for each: expected win probability
    (action value), log-probability (behavioural cloning); a state-value model gives
    one score, the position's expected win probability, under the name ``"value"``."""
    import torch

    from neuralengine.config import ACTION_VALUE, BEHAVIORAL_CLONING
    from neuralengine.research.activations import run_layers

    moves, actions = legal_actions(board)
    tokens = torch.from_numpy(tokenize_board(board).astype(np.int64))[None].to(device)
    kind = model.cfg.kind
    with torch.no_grad():
        if kind == ACTION_VALUE:
            out = run_layers(model, tokens, torch.from_numpy(actions)[None].to(device), hook)[0]
            return [m.uci() for m in moves], expected_win_prob(out.double().cpu().numpy())
        out = run_layers(model, tokens, None, hook)[0].double().cpu().numpy()
    if kind == BEHAVIORAL_CLONING:
        return [m.uci() for m in moves], out[actions]
    return ["value"], np.array([expected_win_prob(out)])


@dataclass
class LayerTally:
    positions: int = 0
    toward: dict[str, int] = field(default_factory=lambda: {"probe": 0, "random": 0})
    away: dict[str, int] = field(default_factory=lambda: {"probe": 0, "random": 0})
    closer: dict[str, int] = field(default_factory=lambda: {"probe": 0, "random": 0})
    delta: dict[str, list[float]] = field(default_factory=lambda: {"probe": [], "random": []})
    reads_empty: int = 0
    edit_norm: list[float] = field(default_factory=list)
    state_norm: list[float] = field(default_factory=list)


def intervene(model: Any, samples: Sequence[Sample], probes: dict[int, EmptyProbe], count: int, seed: int,
              device: str, progress: Any = None) -> dict[str, Any]:
    """Edit one square token along the empty-square probe, and along a random direction of the same norm.

    For each position a random non-king piece is chosen whose removal leaves a
    legal position. The network scores the moves of the position, of the
    position with that piece really removed, and of the position with the
    square's token edited at each layer so that the probe reads "empty" with
    the margin typical of really empty squares. An edit moves "toward" the
    edited position when the Spearman correlation between the edited scores
    and the really-edited position's scores, over the moves legal in both, is
    higher than without the edit (for a state-value model: when the value
    comes closer to the really-edited position's value).
    """
    import torch

    from neuralengine.config import STATE_VALUE
    from neuralengine.research.activations import board_position
    from neuralengine.research.linear import spearman

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    value_model = model.cfg.kind == STATE_VALUE
    tallies = {layer: LayerTally() for layer in probes}
    used = 0
    for sample in samples:
        if used >= count:
            break
        candidates = removal_candidates(sample.board)
        rng.shuffle(candidates)
        chosen = None
        names_o, s_orig = _move_scores(model, sample.board, device) if candidates else ([], np.zeros(0))
        for square, edited in candidates:
            names_e, s_edit = _move_scores(model, edited, device)
            common = sorted(set(names_o) & set(names_e))
            if value_model or len(common) >= 3:
                chosen = (square, names_o, s_orig, names_e, s_edit, common)
                break
        if chosen is None:
            continue
        square, names_o, s_orig, names_e, s_edit, common = chosen
        io = [names_o.index(m) for m in common]
        ie = [names_e.index(m) for m in common]
        a, b = s_orig[io], s_edit[ie]
        base = abs(a[0] - b[0]) if value_model else spearman(a, b)
        if not np.isfinite(base):
            continue
        used += 1
        pos = board_position(square)
        for layer, probe in probes.items():
            tally = tallies[layer]
            tally.positions += 1
            g = torch.from_numpy(probe.direction).float().to(device)
            unit = torch.from_numpy(nrng.standard_normal(len(probe.direction))).float().to(device)
            unit = unit / unit.norm()
            for kind in ("probe", "random"):
                record: dict[str, Any] = {}

                def hook(i: int, board: torch.Tensor, moves: torch.Tensor | None,
                         kind: str = kind, record: dict[str, Any] = record) -> tuple | None:
                    if i != layer:
                        return None
                    x = board[..., pos, :]
                    shift = ((probe.margin - (x @ g + probe.offset)) / (g @ g)).unsqueeze(-1) * g
                    if kind == "random":
                        shift = shift.norm(dim=-1, keepdim=True) * unit
                    board = board.clone()
                    board[..., pos, :] = x + shift
                    record["reads_empty"] = bool(((x + shift) @ g + probe.offset > 0).all())
                    record["edit_norm"] = float(shift.norm(dim=-1).mean())
                    record["state_norm"] = float(x.norm(dim=-1).mean())
                    return board, moves

                _, s_new = _move_scores(model, sample.board, device, hook)
                c = s_new[io]
                if value_model:
                    gain = base - abs(c[0] - b[0])
                    tally.closer[kind] += gain > 0
                else:
                    rho = spearman(c, b)
                    gain = (rho - base) if np.isfinite(rho) else 0.0
                    tally.closer[kind] += bool(np.linalg.norm(c - b) < np.linalg.norm(a - b))
                # a ranking the edit leaves as it was counts neither way
                tally.toward[kind] += gain > 1e-9
                tally.away[kind] += gain < -1e-9
                tally.delta[kind].append(float(gain))
                if kind == "probe":
                    tally.reads_empty += record["reads_empty"]
                    tally.edit_norm.append(record["edit_norm"])
                    tally.state_norm.append(record["state_norm"])
        if progress is not None:
            progress.update(1)
    result: dict[str, Any] = {
        "positions": used,
        "metric": ("value closer to the edited position's value" if value_model
                   else "Spearman correlation with the edited position's move scores rises"),
        "layers": {},
    }
    for layer, tally in tallies.items():
        n = max(tally.positions, 1)
        result["layers"][str(layer)] = {
            "positions": tally.positions,
            "probe_accuracy": probes[layer].accuracy,
            "target_margin": probes[layer].margin,
            "toward_rate": {k: v / n for k, v in tally.toward.items()},
            "away_rate": {k: v / n for k, v in tally.away.items()},
            "closer_rate": {k: v / n for k, v in tally.closer.items()},
            "mean_gain": {k: float(np.mean(v)) if v else None for k, v in tally.delta.items()},
            "probe_reads_empty_after_edit": tally.reads_empty / n,
            "mean_edit_norm": float(np.mean(tally.edit_norm)) if tally.edit_norm else None,
            "mean_state_norm": float(np.mean(tally.state_norm)) if tally.state_norm else None,
        }
    return result


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def layer_names(num_layers: int) -> list[str]:
    return ["embedding"] + [f"block {i}" for i in range(1, num_layers + 1)]


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null, NumPy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def format_table(report: dict[str, Any]) -> str:
    """Plain-text table: one row per feature, one column per layer (trained / random)."""
    layers = report["layers"]
    head = f"{'feature':<26} {'metric':<8} {'baseline':>8}  " + "  ".join(f"{n:>13}" for n in layers)
    lines = [head, "-" * len(head)]
    for name, info in report["features"].items():
        trained = report["results"]["trained"][name]
        rand = report["results"].get("random", {}).get(name, [None] * len(layers))
        cells = []
        for t, r in zip(trained, rand):
            cells.append(f"{_fmt(t):>6} / {_fmt(r):<6}")
        lines.append(f"{name:<26} {info['metric']:<8} {_fmt(report['results']['baseline'][name]):>8}  "
                     + "  ".join(cells))
    lines.append("cells: the model / a random network of the same shape (held-out games)")
    binary = [n for n, info in report["features"].items() if len(info["classes"]) == 2]
    if binary:
        lines += ["", "balanced accuracy (mean recall of yes and no; a majority guess scores 0.500):"]
        for name in binary:
            got = report["results"]["balanced_accuracy"].get(name, {})
            cells = [f"{_fmt(t):>6} / {_fmt(r):<6}" for t, r in zip(got.get("trained", []), got.get("random", []))]
            lines.append(f"{name:<26} {'':<8} {'0.500':>8}  " + "  ".join(cells))
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def plot_heatmap(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["features"])
    layers = report["layers"]
    panels = [("trained", "the model")] + ([("random", "random network, same shape")]
                                           if "random" in report["results"] else [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(1.0 + 0.62 * len(names), 1.3 + 0.42 * len(layers) * len(panels)),
                             squeeze=False)
    labels = [f"{n}\n(base {_fmt(report['results']['baseline'][n])})" for n in names]
    for ax, (key, title) in zip(axes[:, 0], panels):
        values = np.array([[np.nan if v is None else v for v in report["results"][key][n]] for n in names],
                          dtype=float).T
        ax.imshow(np.clip(values, 0, 1), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6.5,
                        color="white" if v < 0.6 else "black")
        ax.set_yticks(range(len(layers)), layers, fontsize=7)
        ax.set_xticks(range(len(names)), labels if ax is axes[-1, 0] else [""] * len(names),
                      rotation=60, ha="right", fontsize=6.5)
        ax.set_title(f"{title}: held-out accuracy (R² for material, win_prob)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------
# Command
# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="neuralengine probe",
        description="Train linear probes on the network's residual stream (after the embedding and every block) "
                    "and report what it encodes about the board, against a random network of the same shape "
                    "and a majority/mean predictor; then test one probe causally by editing the stream.")
    p.add_argument("inputs", nargs="+", type=Path,
                   help="positions: .neav shards, annotated text (FEN<TAB>move:score ...), PGN, EPD/FEN files "
                        "(.gz/.xz too) or folders of them")
    p.add_argument("--weights", help="weights file, DeepMind checkpoint folder or downloaded model name such as 9M "
                                     "(default: the shipped model)")
    p.add_argument("--out", type=Path, default=Path("probes"), help="output folder (default: probes)")
    p.add_argument("--positions", type=int, default=2000, help="positions to probe (default 2000)")
    p.add_argument("--per-game", type=int, default=10,
                   help="at most this many positions per game, drawn at random (0: all; default 10)")
    p.add_argument("--test-fraction", type=float, default=0.25, help="share of the games held out (default 0.25)")
    p.add_argument("--move", choices=("random", "best"), default="random",
                   help="candidate move shown to an action-value model: a random legal move, or the data's best "
                        "scored move (default random)")
    p.add_argument("--squares", type=int, default=8, metavar="S",
                   help="random squares per position whose own tokens are probed (default 8)")
    p.add_argument("--features", default=None,
                   help=f"comma-separated feature families (default: all of {','.join(FAMILIES)}; for a text "
                        "model: piece3,piece13,strength)")
    p.add_argument("--read-at", choices=("dot", "both"), default="dot",
                   help="text models: read at the '.' of each move number (default), or also at the space before "
                        "each black move")
    p.add_argument("--intervene", type=int, default=200, metavar="N",
                   help="held-out positions for the intervention test (0: skip; default 200)")
    p.add_argument("--intervene-layers", default="all",
                   help="layers to edit, as 0 (embedding) .. L-1, comma-separated, or 'all' (default)")
    p.add_argument("--intervene-push", type=float, default=0.25,
                   help="text models: the larger edit, as a share of the vector's length (default 0.25)")
    p.add_argument("--l2", type=float, default=1e-3, help="L2 penalty of the probes (standardised units)")
    p.add_argument("--max-iter", type=int, default=100, help="L-BFGS iterations per logistic probe")
    p.add_argument("--batch-size", type=int, default=64, help="positions per network call")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling, split, random network and directions")
    p.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads (default 1)")
    p.add_argument("--device", default="cpu", help="PyTorch device (default cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _parse_layers(text: str, num_layers: int) -> list[int]:
    if text == "all":
        return list(range(num_layers))
    try:
        layers = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise ProbeError(f"--intervene-layers must be 'all' or numbers, got {text!r}") from None
    bad = [k for k in layers if not 0 <= k < num_layers]
    if bad:
        raise ProbeError(f"--intervene-layers {bad} outside 0..{num_layers - 1} (an edit after the last block "
                         "changes nothing the head reads)")
    return layers


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Do the whole job; returns the report written to ``probes.json``."""
    import torch

    from neuralengine.config import ACTION_VALUE
    from neuralengine.export import model_from_weights
    from neuralengine.model import Transformer
    from neuralengine.paths import default_weights
    from neuralengine.progress import Progress
    from neuralengine.research.activations import WalkError, check_walk, readout_site
    from neuralengine.weights import WeightsError, load_weights

    if args.features is None:
        args.features = ",".join(FAMILIES)
    started = time.monotonic()
    show = not args.quiet
    families = [f.strip() for f in args.features.split(",") if f.strip()]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ProbeError(f"unknown feature families {unknown}; choose from {', '.join(FAMILIES)}")
    if args.positions < 4:
        raise ProbeError("--positions must be at least 4")
    if not 0 < args.test_fraction < 1:
        raise ProbeError("--test-fraction must lie strictly between 0 and 1")
    if not 1 <= args.squares <= 64:
        raise ProbeError("--squares must lie in 1..64")
    torch.set_num_threads(max(1, args.threads))
    try:
        if args.weights:
            from neuralengine.deepmind import resolve_weights

            # as the engine does: a released model's name, a checkpoint folder or a weights file
            weights_path = resolve_weights(args.weights)
        else:
            weights_path = default_weights()
        weights = load_weights(weights_path)
    except WeightsError as exc:
        raise ProbeError(str(exc)) from None
    cfg = weights.config
    model = model_from_weights(weights, args.device)
    torch.manual_seed(args.seed)
    random_model = Transformer(cfg).to(args.device).eval()
    intervene_layers = _parse_layers(args.intervene_layers, cfg.num_layers) if args.intervene else []

    bar = Progress("probe: reading positions", total=args.positions, unit="pos", enabled=show)
    samples = load_samples(args.inputs, args.positions, args.per_game, args.seed, bar.update)
    bar.close()
    if len(samples) < 4:
        raise ProbeError(f"only {len(samples)} usable positions in the inputs")
    train, test = split_by_game(samples, args.test_fraction, args.seed)
    rng = random.Random(args.seed)
    action_value = cfg.kind == ACTION_VALUE
    moves = [choose_move(s, args.move, rng) if action_value else None for s in samples]
    nrng = np.random.default_rng(args.seed)
    squares = np.stack([nrng.choice(64, size=args.squares, replace=False) for _ in samples]).astype(np.int64)
    readout = readout_site(cfg)
    feats = build_features(samples, moves, squares, readout, families)
    skipped: dict[str, str] = {}
    if "win_prob" in families and not any(f.name.endswith(":win_prob") for f in feats):
        skipped[f"{readout}:win_prob"] = "no position in the inputs carries Stockfish scores"
    if "move" in families and readout != "move":
        skipped["move:*"] = "this model has no move token"

    # Check once, on real inputs, that the layer walk computes what the model computes.
    first = samples[: min(4, len(samples))]
    boards = torch.from_numpy(np.stack([tokenize_board(s.board) for s in first]).astype(np.int64)).to(args.device)
    acts = (torch.tensor([[MOVE_TO_ACTION[m.uci()]] for m in moves[: len(first)]]).to(args.device)
            if action_value else None)
    try:
        check_walk(model, boards, acts)
    except WalkError as exc:
        raise ProbeError(str(exc)) from None

    networks = {"trained": model, "random": random_model}
    states: dict[str, States] = {}
    for key, net in networks.items():
        bar = Progress(f"probe: {key} network", total=len(samples), unit="pos", enabled=show)
        states[key] = gather_states(net, samples, moves, squares, args.batch_size, args.device, bar)
        bar.close()

    layers = layer_names(cfg.num_layers)
    results: dict[str, Any] = {"trained": {}, "random": {}, "baseline": {}, "balanced_accuracy": {}}
    fits = [(key, f) for key in networks for f in feats]
    bar = Progress("probe: fitting probes", total=len(fits) * len(layers), unit="probes", enabled=show)
    for key, feature in fits:
        if feature.task == "classification":
            problem = "constant on the training positions" if np.unique(feature.labels[train]).size < 2 else None
        else:
            y_train, y_test = feature.labels[_scored(feature, train)], feature.labels[_scored(feature, test)]
            problem = ("too few scored positions on one side of the split" if min(len(y_train), len(y_test)) < 2
                       else "constant on the training positions" if np.std(y_train) == 0 else None)
        if problem:
            skipped[feature.name] = problem
            bar.update(len(layers))
            continue
        scores, balanced = [], []
        for layer in range(len(layers)):
            got = probe_score(feature, states[key], layer, train, test, args.l2, args.max_iter)
            scores.append(got["score"])
            balanced.append(got.get("balanced"))
            bar.update(1)
        results[key][feature.name] = scores
        if feature.task == "classification":
            results["balanced_accuracy"].setdefault(feature.name, {})[key] = balanced
    bar.close()
    for name in skipped:
        for key in ("trained", "random", "balanced_accuracy"):
            results[key].pop(name, None)
    # A feature skipped for one network is skipped for both.
    kept = [f for f in feats if f.name not in skipped]
    for feature in kept:
        results["baseline"][feature.name] = baseline_score(feature, squares, train, test)

    intervention: dict[str, Any] | None = None
    if intervene_layers:
        piece3 = np.stack([F.piece3(s.board) for s in samples])
        probes = {k: fit_empty_probe(states["trained"], squares, piece3, k, train, test, args.l2, args.max_iter)
                  for k in intervene_layers}
        held_out = [samples[i] for i in test]
        bar = Progress("probe: intervention", total=min(args.intervene, len(held_out)), unit="pos", enabled=show)
        intervention = intervene(model, held_out, probes, args.intervene, args.seed, args.device, bar)
        bar.close()
        intervention["layer_names"] = {str(k): layers[k] for k in intervene_layers}
        intervention["description"] = (
            "At layer k (0 = after the embedding) the token of one occupied square is moved along the "
            "'empty square' probe until the probe reads empty with the margin typical of really empty squares; "
            "the control moves it by the same norm along a random direction. toward_rate: share of positions "
            "whose move ranking came closer (Spearman, over the moves legal in both) to the network's ranking of "
            "the position with the piece really removed; away_rate: moved further from it (the rest kept their "
            "ranking); closer_rate: the move scores came nearer in Euclidean distance. mean_gain: mean change of "
            "that Spearman correlation.")

    report: dict[str, Any] = {
        "weights": {"path": str(weights_path), "sha256": weights.sha256, "architecture": cfg.to_dict(),
                    "provenance": {k: weights.metadata.get("provenance", {}).get(k)
                                   for k in ("source", "trainer", "steps", "data") if
                                   k in weights.metadata.get("provenance", {})}},
        "data": {
            "inputs": [str(p) for p in args.inputs],
            "positions": len(samples),
            "games": len({s.game for s in samples}),
            "train_positions": int(len(train)), "test_positions": int(len(test)),
            "train_games": len({samples[i].game for i in train}), "test_games": len({samples[i].game for i in test}),
            "per_game": args.per_game, "candidate_move": args.move if action_value else None,
            "squares_per_position": args.squares,
        },
        "settings": {"l2": args.l2, "max_iter": args.max_iter, "seed": args.seed, "test_fraction": args.test_fraction},
        "layers": layers,
        "features": {f.name: {"site": f.site, "task": f.task,
                              "metric": "R2" if f.task == "regression" else "accuracy",
                              "classes": list(f.classes), "description": f.description,
                              **({"positive_rate": float(np.mean(f.labels[test]))}
                                 if f.task == "classification" and f.num_classes == 2 else {})}
                     for f in kept},
        "skipped": skipped,
        "results": results,
        "intervention": intervention,
    }
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    return _clean(report)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("neuralengine probe: needs PyTorch: pip install 'neuralengine[research]'", file=sys.stderr)
        return 1
    try:
        report = run(args)
    except ProbeError as exc:
        print(f"neuralengine probe: {exc}", file=sys.stderr)
        return 1
    write_report(report, args.out, format_intervention)
    return 0


def write_report(report: dict[str, Any], out: Path, intervention_text: Any) -> None:
    """Write ``probes.json`` and the heatmap into ``out`` and print the table (board and text models alike);
    ``intervention_text`` formats the report's intervention, when it has one."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "probes.json"
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(format_table(report))
    if report["intervention"]:
        print(intervention_text(report["intervention"]))
    try:
        png = plot_heatmap(report, out / "probes.png")
    except ImportError:
        print("neuralengine probe: matplotlib is missing, so no heatmap was drawn", file=sys.stderr)
        png = None
    print(f"wrote {json_path}" + (f" and {png}" if png else ""))


def format_intervention(result: dict[str, Any]) -> str:
    lines = [f"intervention on {result['positions']} held-out positions ({result['metric']}):",
             f"{'layer':<10} {'probe acc':>9}  {'probe direction: toward/away':>28}  "
             f"{'random direction: toward/away':>29}"]
    for key, row in result["layers"].items():
        name = result.get("layer_names", {}).get(key, key)
        lines.append(f"{name:<10} {_fmt(row['probe_accuracy']):>9}  "
                     f"{_fmt(row['toward_rate']['probe']) + ' / ' + _fmt(row['away_rate']['probe']):>28}  "
                     f"{_fmt(row['toward_rate']['random']) + ' / ' + _fmt(row['away_rate']['random']):>29}")
    return "\n".join(lines)
