"""``neuralengine probe`` on a text model (the ``pgn_lm`` kind): what does a model that reads the game as a
move transcript know about the board?

The residual stream after the embedding and after every block is read at the ``.`` of each move number, where
the model is about to write white's move (Chess-GPT's reading site); ``--read-at both`` also reads the space
before each black move, so that both colours are to move. Linear probes (one per square, all reading the same
vector) learn, on the sites of some games, and are scored on the sites of the other games:

* ``dot:piece3``: each square as empty / mine / theirs, relative to the player to move (OthelloGPT's framing);
* ``dot:piece13``: each square as empty or one of 12 pieces (mine/theirs × 6 types);
* ``dot:piece13_colour``: the same with white/black in place of mine/theirs (only with ``--read-at both``:
  at the dots white is always to move, and the two framings are the same);
* ``dot:strength``: whether the player to move is stronger than the median of the training games (the games'
  ``WhiteElo``/``BlackElo``, or the Elo columns of ``datagen --pgn`` transcripts), where the data has them.

Each next to the same probe on a randomly initialised network of the same shape and a majority-class
predictor.

**Intervention.** At layer k the vector read at the ``.`` is moved along the ``piece3`` probe's direction for
one square, from "mine" to "empty", until the probe reads empty with the margin typical of really empty
squares; the model then scores every legal move's text after the edited ``.``. The square is that of the
piece the unedited model was about to move (its most probable move's origin). Measured: how often the most
probable move changes, and the change of the probability (renormalised over the legal moves) of the moves from
that square; the control moves the vector by the same distance in a random direction.

The networks run as :class:`neuralengine.train.pgn_lm.GPT`, the PyTorch copy of the architecture (the
interventions edit its stream); its logits are checked against the engine's NumPy model on the first game.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import chess
import chess.pgn
import numpy as np

from neuralengine.research import features as F
from neuralengine.research.probe import (
    Feature,
    ProbeError,
    States,
    _clean,
    baseline_score,
    layer_names,
    probe_score,
    split_by_game,
)

SITE = "dot"
#: Feature families of text models.
TEXT_FAMILIES = ("piece3", "piece13", "strength")
_NUMBER = re.compile(r"^\d+\.")


@dataclass
class TextGame:
    """One game from the standard start: its id, moves and the players' Elo (``None`` when unknown)."""

    game: str
    moves: list[chess.Move]
    elos: tuple[int | None, int | None]


@dataclass
class TextSample:
    """One reading site: the game, the character index, the board there and the mover's Elo."""

    game: str
    index: int
    board: chess.Board
    elo: int | None


def parse_transcript(text: str) -> list[chess.Move]:
    """The moves of a ``;1.e4 e5 2.Nf3`` transcript (``ValueError`` for an illegal or unreadable one)."""
    if not text.startswith(";"):
        raise ValueError("a transcript starts with ';'")
    board = chess.Board()
    moves = []
    for word in text[1:].split():
        san = _NUMBER.sub("", word)
        if san:
            move = board.parse_san(san)
            board.push(move)
            moves.append(move)
    return moves


def _elo(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def load_games(paths: Sequence[Path], limit: int) -> list[TextGame]:
    """Games of ``.txt`` transcript files (``datagen --pgn``) and PGN files, from the standard start only."""
    from neuralengine.data.transcripts import read_transcripts
    from neuralengine.research.probe import _expand

    games: list[TextGame] = []
    for path in _expand(list(paths)):
        if len(games) >= limit:
            break
        name = path.name.lower()
        if name.endswith(".txt"):
            for g in read_transcripts([path]):
                try:
                    games.append(TextGame(f"{path.name}#{g.game_id}", parse_transcript(g.text), (g.white_elo, g.black_elo)))
                except ValueError:
                    continue
                if len(games) >= limit:
                    break
        elif name.endswith(".pgn"):
            with open(path, encoding="utf-8", errors="replace") as fh:
                number = 0
                while len(games) < limit:
                    game = chess.pgn.read_game(fh)
                    if game is None:
                        break
                    number += 1
                    if game.errors or game.board().fen() != chess.STARTING_FEN:
                        continue
                    h = game.headers
                    games.append(TextGame(f"{path.name}#{number}", list(game.mainline_moves()),
                                          (_elo(h.get("WhiteElo")), _elo(h.get("BlackElo")))))
    return games


def reading_sites(game: TextGame, block_size: int, read_at: str) -> tuple[str, list[TextSample]]:
    """The game's transcript (cut to ``block_size`` characters) and its reading sites inside that."""
    from neuralengine.textlm.transcript import transcript

    board = chess.Board()
    text = ";"
    sites: list[TextSample] = []
    for ply, move in enumerate(game.moves):
        if ply:
            if ply % 2 == 1 and read_at == "both" and len(text) < block_size:
                sites.append(TextSample(game.game, len(text), board.copy(stack=False), game.elos[1]))
            text += " "
        if ply % 2 == 0:
            text += f"{ply // 2 + 1}."
            if len(text) <= block_size:
                sites.append(TextSample(game.game, len(text) - 1, board.copy(stack=False), game.elos[0]))
        text += board.san(move)
        board.push(move)
    assert text == transcript(game.moves)
    return text[:block_size], sites


def colour13(board: chess.Board) -> np.ndarray:
    """[64] int: 0 empty, 1-6 white pawn..king, 7-12 black pawn..king."""
    out = np.zeros(64, dtype=np.int64)
    for square, piece in board.piece_map().items():
        out[square] = piece.piece_type + (0 if piece.color == chess.WHITE else 6)
    return out


def build_text_features(samples: Sequence[TextSample], train: np.ndarray, families: Sequence[str],
                        read_at: str) -> tuple[list[Feature], dict[str, str]]:
    out: list[Feature] = []
    skipped: dict[str, str] = {}
    if "piece3" in families:
        out.append(Feature(f"{SITE}:piece3", SITE, "classification", np.stack([F.piece3(s.board) for s in samples]),
                           "empty / mine / theirs (relative to the player to move), every square read at the "
                           "site (one probe per square)", F.PIECE3_CLASSES, per_square=True))
    if "piece13" in families:
        out.append(Feature(f"{SITE}:piece13", SITE, "classification", np.stack([F.piece13(s.board) for s in samples]),
                           "empty or one of 12 pieces, mine/theirs × 6 types", F.PIECE13_CLASSES, per_square=True))
        if read_at == "both":
            classes = ("empty",) + tuple(f"white {chess.piece_name(t)}" for t in chess.PIECE_TYPES) \
                + tuple(f"black {chess.piece_name(t)}" for t in chess.PIECE_TYPES)
            out.append(Feature(f"{SITE}:piece13_colour", SITE, "classification",
                               np.stack([colour13(s.board) for s in samples]),
                               "empty or one of 12 pieces, white/black × 6 types", classes, per_square=True))
    if "strength" in families:
        elos = np.array([np.nan if s.elo is None else s.elo for s in samples], dtype=np.float64)
        known = np.isfinite(elos)
        if known.all() and len(np.unique(elos[train])) > 1:
            median = float(np.median(elos[train]))
            labels = (elos > median).astype(np.int64)
            out.append(Feature(f"{SITE}:strength", SITE, "classification", labels,
                               f"the player to move's Elo is above the training median ({median:.0f})",
                               ("weaker", "stronger")))
        else:
            skipped[f"{SITE}:strength"] = "the games do not all carry both players' Elo"
    return out, skipped


def gather_text_states(model: Any, texts: Sequence[str], sites: Sequence[Sequence[TextSample]],
                       progress: Any = None) -> np.ndarray:
    """[P, L+1, D]: the residual stream at every site, game by game."""
    import torch

    from neuralengine.train.pgn_lm import encode

    out = []
    with torch.no_grad():
        for text, game_sites in zip(texts, sites):
            if not game_sites:
                continue
            _, hidden = model(torch.tensor([encode(text)]), return_hidden=True)
            index = torch.tensor([s.index for s in game_sites])
            out.append(torch.stack([h[0, index] for h in hidden], dim=1).float().numpy())
            if progress is not None:
                progress.update(len(game_sites))
    return np.concatenate(out)


# ---------------------------------------------------------------------------
# Intervention
# ---------------------------------------------------------------------------


@dataclass
class SquareProbe:
    """``piece3`` probe at one layer, as raw directions: ``logit(empty) - logit(mine) = g[sq] · x + c[sq]``."""

    directions: np.ndarray   # [64, D]
    offsets: np.ndarray      # [64]
    margins: np.ndarray      # [64]: median of g · x + c over sites where the square is really empty
    accuracy: float


def fit_square_probe(states: np.ndarray, piece3: np.ndarray, layer: int, train: np.ndarray, test: np.ndarray,
                     l2: float, max_iter: int) -> SquareProbe:
    from neuralengine.research.linear import accuracy, fit_logistic

    x = states[train, layer]
    probe = fit_logistic(x, piece3[train], 3, l2, max_iter)
    dirs, offs, margins = [], [], []
    for sq in range(64):
        g, c = probe.raw_direction(sq, F.EMPTY, F.MINE)
        dirs.append(g)
        offs.append(c)
        m = x.astype(np.float64) @ g + c
        empty = m[piece3[train, sq] == F.EMPTY]
        margins.append(max(1.0, float(np.median(empty))) if len(empty) else 1.0)
    acc = accuracy(probe.predict(states[test, layer]), piece3[test])
    return SquareProbe(np.array(dirs), np.array(offs), np.array(margins), acc)


def _move_log_probs(model: Any, prefix: str, board: chess.Board, moves: list[chess.Move], edit: Any) -> np.ndarray:
    """Log-probability of each move's text (SAN and separator) after ``prefix`` ending in the reading site."""
    import torch

    from neuralengine.train.pgn_lm import encode

    tokens = encode(prefix)
    with torch.no_grad():
        _, past = model.extend(torch.tensor([tokens[:-1]]))
        conts = [encode(board.san(m) + " ") for m in moves]
        width = 1 + max(len(c) for c in conts)
        batch = torch.zeros(len(moves), width - 1, dtype=torch.long)
        batch[:, 0] = tokens[-1]
        for row, c in enumerate(conts):
            batch[row, 1:len(c)] = torch.tensor(c[:-1], dtype=torch.long)
        logits, _ = model.extend(batch, past, edit)
        logp = torch.log_softmax(logits.double(), dim=-1).numpy()
    return np.array([sum(logp[row, i, t] for i, t in enumerate(c)) for row, c in enumerate(conts)])


def _renorm(scores: np.ndarray) -> np.ndarray:
    p = np.exp(scores - scores.max())
    return p / p.sum()


def intervene_text(model: Any, samples: Sequence[TextSample], texts: dict[str, str], probes: dict[int, SquareProbe],
                   count: int, seed: int, push: float = 0.25, progress: Any = None) -> dict[str, Any]:
    """The intervention on up to ``count`` held-out sites (see the module's docstring).

    Two sizes of edit: ``margin``, just far enough along the probe's direction that the probe reads the square
    empty with the margin typical of really empty squares; ``norm``, ``push`` times the vector's own length
    along the same direction. Each against a random direction of the same length."""
    import torch

    rng = np.random.default_rng(seed)
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    sizes = ("margin", "norm")
    tallies = {(k, size, kind): {"changed": 0, "drop": [], "step": []}
               for k in probes for size in sizes for kind in ("probe", "random")}
    used = 0
    for i in order:
        if used >= count:
            break
        s = samples[i]
        moves = list(s.board.legal_moves)
        if len(moves) < 2:
            continue
        prefix = texts[s.game][: s.index + 1]
        base = _renorm(_move_log_probs(model, prefix, s.board, moves, None))
        top = moves[int(base.argmax())]
        square = top.from_square
        from_sq = np.array([m.from_square == square for m in moves])
        base_mass = float(base[from_sq].sum())
        used += 1
        for layer, probe in probes.items():
            g, c, target = probe.directions[square], probe.offsets[square], probe.margins[square]
            unit = g / np.linalg.norm(g)
            for size in sizes:
                for kind in ("probe", "random"):
                    steps: list[float] = []

                    def edit(at: int, x: torch.Tensor, layer: int = layer, size: str = size, kind: str = kind,
                             steps: list[float] = steps) -> torch.Tensor:
                        if at != layer:
                            return x
                        v = x[0, 0].double().numpy()
                        if size == "margin":
                            step = max(0.0, target - float(v @ g + c)) / float(g @ g) * g
                        else:
                            step = push * float(np.linalg.norm(v)) * unit
                        if kind == "random":
                            r = rng.standard_normal(len(g))
                            step = r / np.linalg.norm(r) * np.linalg.norm(step)
                        steps.append(float(np.linalg.norm(step) / max(np.linalg.norm(v), 1e-9)))
                        x = x.clone()
                        x[:, 0] += torch.from_numpy(step).to(x.dtype)
                        return x

                    after = _renorm(_move_log_probs(model, prefix, s.board, moves, edit))
                    t = tallies[(layer, size, kind)]
                    t["changed"] += int(moves[int(after.argmax())] != top)
                    t["drop"].append(base_mass - float(after[from_sq].sum()))
                    t["step"].extend(steps)
        if progress is not None:
            progress.update(1)
    layers: dict[str, Any] = {}
    for layer in probes:
        row: dict[str, Any] = {"probe_accuracy": probes[layer].accuracy}
        for size in sizes:
            cell = {"top_move_changed": {}, "mass_from_square_drop": {}, "relative_step": {}}
            for kind in ("probe", "random"):
                t = tallies[(layer, size, kind)]
                cell["top_move_changed"][kind] = t["changed"] / max(used, 1)
                cell["mass_from_square_drop"][kind] = float(np.mean(t["drop"])) if t["drop"] else None
                cell["relative_step"][kind] = float(np.mean(t["step"])) if t["step"] else None
            row[size] = cell
        layers[str(layer)] = row
    return {"positions": used, "push": push, "layers": layers}


def format_text_intervention(result: dict[str, Any]) -> str:
    lines = [f"intervention on {result['positions']} held-out sites (the square of the piece the model was about "
             "to move, edited toward 'empty'); margin: until the probe reads empty; norm: "
             f"{result['push']:g} x the vector's length",
             f"{'layer':<10} {'probe acc':>9} {'edit':<7} {'|step|/|x|':>10}  {'top move changed: probe / random':>34}"
             f"  {'P(moves from it) drop: probe / random':>38}"]
    for key, row in result["layers"].items():
        name = result.get("layer_names", {}).get(key, key)
        for size in ("margin", "norm"):
            cell = row[size]
            ch, dr = cell["top_move_changed"], cell["mass_from_square_drop"]
            lines.append(f"{name:<10} {row['probe_accuracy']:>9.3f} {size:<7} {_num(cell['relative_step']['probe'], '.3f'):>10}  "
                         f"{ch['probe']:>17.3f} / {ch['random']:<14.3f}  {_num(dr['probe']):>21} / {_num(dr['random']):<14}")
    return "\n".join(lines)


def _num(v: float | None, fmt: str = "+.3f") -> str:
    return "-" if v is None else format(v, fmt)


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def run_text(args: argparse.Namespace, weights_path: Path) -> dict[str, Any]:
    """``neuralengine probe`` for a ``pgn_lm`` weights file; returns the report."""
    import torch

    from neuralengine.progress import Progress
    from neuralengine.textlm.model import TextLM
    from neuralengine.train.pgn_lm import GPT, encode, model_from_weights
    from neuralengine.weights import WeightsError, load_text_weights

    started = time.monotonic()
    show = not args.quiet
    families = [f.strip() for f in args.features.split(",") if f.strip()]
    unknown = sorted(set(families) - set(TEXT_FAMILIES))
    if unknown:
        raise ProbeError(f"a text model has the feature families {', '.join(TEXT_FAMILIES)}; not {unknown}")
    if args.positions < 4:
        raise ProbeError("--positions must be at least 4")
    if not 0 < args.test_fraction < 1:
        raise ProbeError("--test-fraction must lie strictly between 0 and 1")
    torch.set_num_threads(max(1, args.threads))
    try:
        weights = load_text_weights(weights_path)
        model = model_from_weights(weights_path)
    except (WeightsError, ValueError) as exc:
        raise ProbeError(str(exc)) from None
    cfg = weights.config
    torch.manual_seed(args.seed)
    random_model = GPT(model.cfg).eval()
    per_game = args.per_game or 10 ** 6
    games = load_games(args.inputs, max(2, args.positions))
    rng = random.Random(args.seed)
    texts: dict[str, str] = {}
    samples: list[TextSample] = []
    by_game: list[tuple[str, list[TextSample]]] = []
    for game in games:
        if len(samples) >= args.positions:
            break
        text, sites = reading_sites(game, cfg.block_size, args.read_at)
        if len(sites) > per_game:
            sites = sorted(rng.sample(sites, per_game), key=lambda s: s.index)
        sites = sites[: args.positions - len(samples)]
        if sites:
            texts[game.game] = text
            samples.extend(sites)
            by_game.append((text, sites))
    if len(samples) < 4:
        raise ProbeError(f"only {len(samples)} reading sites in the inputs (transcripts or PGN games from the "
                         "initial position are needed)")
    # The PyTorch copy must compute what the engine's model computes.
    first = encode(by_game[0][0])
    engine_logits = TextLM(cfg, weights.tensors).forward([first]).logits
    with torch.no_grad():
        torch_logits = model(torch.tensor([first])).numpy()
    if not np.allclose(engine_logits, torch_logits, atol=1e-3):
        raise ProbeError("the probes' copy of the network disagrees with the engine's model")
    train, test = split_by_game(samples, args.test_fraction, args.seed)
    feats, skipped = build_text_features(samples, train, families, args.read_at)
    states: dict[str, States] = {}
    for key, net in (("trained", model), ("random", random_model)):
        bar = Progress(f"probe: {key} network", total=len(samples), unit="sites", enabled=show)
        readout = gather_text_states(net, [t for t, _ in by_game], [s for _, s in by_game], bar)
        bar.close()
        states[key] = States(readout, np.zeros((len(readout), 0, readout.shape[1], 0), dtype=np.float32))
    layers = layer_names(cfg.n_layer)
    results: dict[str, Any] = {"trained": {}, "random": {}, "baseline": {}, "balanced_accuracy": {}}
    bar = Progress("probe: fitting probes", total=2 * len(feats) * len(layers), unit="probes", enabled=show)
    for key in ("trained", "random"):
        for feature in feats:
            scores, balanced = [], []
            for layer in range(len(layers)):
                got = probe_score(feature, states[key], layer, train, test, args.l2, args.max_iter)
                scores.append(got["score"])
                balanced.append(got.get("balanced"))
                bar.update(1)
            results[key][feature.name] = scores
            results["balanced_accuracy"].setdefault(feature.name, {})[key] = balanced
    bar.close()
    for feature in feats:
        results["baseline"][feature.name] = baseline_score(feature, np.zeros((len(samples), 0), dtype=np.int64),
                                                           train, test)
    intervention = None
    if args.intervene:
        from neuralengine.research.probe import _parse_layers

        chosen = _parse_layers(args.intervene_layers, cfg.n_layer + 1) if args.intervene_layers != "all" \
            else list(range(cfg.n_layer + 1))
        piece3 = np.stack([F.piece3(s.board) for s in samples])
        probes = {k: fit_square_probe(states["trained"].readout, piece3, k, train, test, args.l2, args.max_iter)
                  for k in chosen}
        held_out = [samples[i] for i in test]
        bar = Progress("probe: intervention", total=min(args.intervene, len(held_out)), unit="sites", enabled=show)
        intervention = intervene_text(model, held_out, texts, probes, args.intervene, args.seed,
                                      args.intervene_push, bar)
        bar.close()
        intervention["layer_names"] = {str(k): layers[k] for k in chosen}
        intervention["description"] = (
            "At layer k (0 = after the embedding) the vector read at the site is moved along the piece3 probe's "
            "'mine -> empty' direction for the square of the piece the unedited model was about to move: 'margin', "
            "until the probe reads empty with the margin typical of really empty squares; 'norm', by push times the "
            "vector's length. The control moves it by the same distance in a random direction. relative_step: the "
            "edit's length over the vector's. top_move_changed: share of sites whose most probable legal move "
            "changed; mass_from_square_drop: mean fall of the probability (renormalised over the legal moves) of "
            "the moves from that square.")
    report: dict[str, Any] = {
        "kind": cfg.kind,
        "weights": {"path": str(weights_path), "sha256": weights.sha256, "architecture": cfg.to_dict(),
                    "provenance": weights.metadata.get("provenance", {})},
        "data": {"inputs": [str(p) for p in args.inputs], "positions": len(samples), "games": len(by_game),
                 "train_positions": int(len(train)), "test_positions": int(len(test)),
                 "train_games": len({samples[i].game for i in train}),
                 "test_games": len({samples[i].game for i in test}),
                 "per_game": args.per_game, "read_at": args.read_at},
        "settings": {"l2": args.l2, "max_iter": args.max_iter, "seed": args.seed, "test_fraction": args.test_fraction},
        "layers": layers,
        "features": {f.name: {"site": f.site, "task": f.task, "metric": "accuracy", "classes": list(f.classes),
                              "description": f.description} for f in feats},
        "skipped": skipped,
        "results": results,
        "intervention": intervention,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    return _clean(report)

