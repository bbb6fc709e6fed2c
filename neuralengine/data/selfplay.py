"""Stockfish self-play at mixed strengths, for diverse training positions.

Each game draws its own settings from a seeded random generator:

* a start: the initial position, or a random entry of an opening book,
  followed by a random number of uniformly random plies;
* for each side, one way of choosing moves:

  - ``multipv``: full strength with ``MultiPV`` K; the move is drawn from a
    softmax over the K moves' win probabilities (Lichess formula) with a
    per-side temperature (optionally ``opening_temperature`` instead for the
    first plies of the game, their number drawn per game from
    ``opening_plies``);
  - ``skill``: Stockfish's own weakening with a random ``Skill Level``;
  - ``elo``: ``UCI_LimitStrength`` with a random ``UCI_Elo``.

Two ways of putting mistakes into the games, both off by default:

* random moves, as Stockfish's own training-data generator makes them: a
  number of plies drawn per game within a ply window (``random_moves`` in
  ``random_window``, plies counted from the game's start, the first move
  being ply 1) each play a uniformly random legal move, or one drawn
  uniformly among Stockfish's top ``random_top_k`` moves;
* blunders: from ply ``blunder_after`` on, with chance ``blunder_rate`` per
  ply and only while neither side is decided (best win probability between
  :data:`UNDECIDED` bounds), a move losing at least ``blunder_loss`` win
  probability is played, drawn uniformly among such moves (all legal moves
  scored by one search). The next position holds something to punish.

On-policy games (``model`` set): a neuralengine model plays one side, chosen
at random, against Stockfish at a ``UCI_Elo`` drawn from ``model_opponents``,
or a Stockfish side drawn as in plain self-play (``"mixed"``), or both sides
(``"self"``), through :class:`neuralengine.engine.Engine`; every
position met is kept, those where the model is to move included, so the
annotated positions are the ones the model actually reaches. Random moves
apply to every side; blunders only to Stockfish sides.

A game ends on checkmate, stalemate, insufficient material, a claimable draw
(threefold repetition, fifty moves), a ply limit, or once the side to move
has been decided (win probability above 0.99 or below 0.01) for a number of
plies in a row.

:func:`play_games` plays many games on the workers of
:mod:`neuralengine.data.scheduler` (processes, or Ray actors) and hands them
on in order.
"""

from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import chess

from neuralengine.data.scheduler import Backend, Emit, Scheduler
from neuralengine.data.stockfish import EngineError, EngineSlot, Stockfish, StockfishSearch, search_timeout_for
from neuralengine.data.text import score_to_win_prob

POLICIES = ("multipv", "skill", "elo")
#: The move chooser of a model's side in on-policy games.
MODEL = "model"
#: An on-policy opponent that is the model itself.
SELF = "self"
#: An on-policy opponent drawn as a plain self-play side (``policies``, ``temperatures``, ...).
MIXED = "mixed"
#: Blunders are played only while the best win probability lies strictly between these.
UNDECIDED = (0.03, 0.97)


@dataclass
class SelfPlayConfig:
    """Settings shared by all games (the per-game choices are drawn from them)."""

    seed: int = 0
    nodes: int | None = 10_000
    depth: int | None = None
    policies: tuple[str, ...] = POLICIES
    multipv: int = 5
    temperatures: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)
    skill_range: tuple[int, int] = (0, 19)
    elo_range: tuple[int, int] = (1350, 2850)
    random_plies: tuple[int, int] = (0, 6)
    max_plies: int = 300
    adjudicate_plies: int = 8
    hash_mb: int = 16
    book: Sequence[str] = field(default_factory=tuple)
    random_moves: int = 0
    random_window: tuple[int, int] = (1, 24)
    random_top_k: int = 0
    blunder_rate: float = 0.0
    blunder_loss: float = 0.3
    blunder_after: int = 8
    model: str | None = None
    model_opponents: tuple[str, ...] = ("1350", "1600", "2000", SELF)
    model_temperature: float = 0.0
    opening_temperature: float | None = None
    opening_plies: tuple[int, int] = (2, 8)

    @property
    def go(self) -> str:
        return f"depth {self.depth}" if self.depth else f"nodes {self.nodes}"


@dataclass
class SideSettings:
    """How one side chooses its moves in one game."""

    policy: str
    skill: int = 20
    elo: int | None = None
    temperature: float = 0.0

    def describe(self) -> str:
        if self.policy == MODEL:
            return MODEL
        if self.policy == "multipv":
            return f"multipv T={self.temperature:g}"
        return f"skill {self.skill}" if self.policy == "skill" else f"elo {self.elo}"


@dataclass
class SelfPlayGame:
    """One self-play game: its positions in the order played, and how it went."""

    game_id: str
    fens: list[str]
    result: str
    reason: str
    sides: tuple[str, str]
    random_moves: int = 0
    blunders: int = 0
    #: Every move from the initial position (or the book position ``start_fen``) in UCI, random plies included.
    moves: list[str] = field(default_factory=list)
    start_fen: str = chess.STARTING_FEN
    #: Each side's approximate Elo (see :func:`approx_elo`); ``None`` for the ``multipv`` chooser.
    elos: tuple[int | None, int | None] = (None, None)


def approx_elo(side: SideSettings) -> int | None:
    """A side's strength on one scale: ``UCI_Elo`` as set, or the Elo that Stockfish 15's own mapping gives a
    ``Skill Level`` (``skill = ((elo - 1346.6) / 143.4) ** (1 / 0.806)``, solved for elo). Both are Stockfish's
    calibration at its own time controls, not at ours: use them to rank, not as ratings. ``None`` for the
    ``multipv`` chooser."""
    if side.policy == "elo":
        return side.elo
    if side.policy == "skill":
        return round(1346.6 + 143.4 * side.skill ** 0.806)
    return None


def game_id(seed: int, index: int) -> str:
    return f"sp{seed}-{index:06d}"


def draw_side(rng: random.Random, cfg: SelfPlayConfig) -> SideSettings:
    policy = rng.choice(cfg.policies)
    if policy == "skill":
        return SideSettings(policy, skill=rng.randint(*cfg.skill_range))
    if policy == "elo":
        return SideSettings(policy, elo=rng.randint(*cfg.elo_range))
    return SideSettings(policy, temperature=rng.choice(cfg.temperatures))


def draw_sides(rng: random.Random, cfg: SelfPlayConfig) -> dict[bool, SideSettings]:
    """Both sides' settings for one game: two drawn Stockfish sides, or an on-policy pairing."""
    if cfg.model is None:
        return {chess.WHITE: draw_side(rng, cfg), chess.BLACK: draw_side(rng, cfg)}
    opponent = rng.choice(cfg.model_opponents)
    if opponent == SELF:
        return {chess.WHITE: SideSettings(MODEL), chess.BLACK: SideSettings(MODEL)}
    model_colour = rng.choice([chess.WHITE, chess.BLACK])
    other = draw_side(rng, cfg) if opponent == MIXED else SideSettings("elo", elo=int(opponent))
    return {model_colour: SideSettings(MODEL), not model_colour: other}


_MODELS: dict[tuple[str, float], Any] = {}


def model_engine(path: str, temperature: float) -> Any:
    """The :class:`neuralengine.engine.Engine` of a weights file, opened once per process (one thread)."""
    key = (path, temperature)
    if key not in _MODELS:
        from neuralengine.engine import Engine

        _MODELS[key] = Engine.open(path, threads=1, warm_up=False, temperature=temperature)
    return _MODELS[key]


def uniform_move(board: chess.Board, rng: random.Random) -> chess.Move:
    """A uniformly random legal move (the board has one)."""
    return rng.choice(list(board.legal_moves))


def multipv_go(cfg: SelfPlayConfig, count: int) -> str:
    """The limit of a search for ``count`` lines: the depth, or the node budget of one move per line."""
    return f"depth {cfg.depth}" if cfg.depth else f"nodes {(cfg.nodes or 10_000) * max(1, count)}"


def scored_moves(engine: Stockfish, start_fen: str, go: str, played: Sequence[str], count: int) -> list[tuple[str, float]]:
    """Stockfish's top ``count`` moves at full strength with their win probabilities, best first (a line
    the search did not reach is left out)."""
    configure(engine, SideSettings("multipv"), count)
    result = engine.search(start_fen, go, played)
    return [(line.move, score_to_win_prob(line.score)) for _, line in sorted(result.lines.items())]


def random_plies(rng: random.Random, cfg: SelfPlayConfig) -> set[int]:
    """The plies of one game that play a random move (Stockfish's generator: N plies in a window)."""
    lo, hi = cfg.random_window
    plies = range(lo, hi + 1)
    return set(rng.sample(plies, min(cfg.random_moves, len(plies)))) if cfg.random_moves else set()


def random_move(engine: Stockfish, board: chess.Board, cfg: SelfPlayConfig, start_fen: str, played: Sequence[str],
                rng: random.Random) -> chess.Move:
    """A uniformly random legal move, or one of Stockfish's top ``random_top_k`` moves."""
    if cfg.random_top_k:
        lines = scored_moves(engine, start_fen, multipv_go(cfg, cfg.random_top_k), played, cfg.random_top_k)
        legal = [chess.Move.from_uci(m) for m, _ in lines if chess.Move.from_uci(m) in board.legal_moves]
        if legal:
            return rng.choice(legal)
    return uniform_move(board, rng)


def blunder_move(engine: Stockfish, board: chess.Board, cfg: SelfPlayConfig, start_fen: str,
                 played: Sequence[str], rng: random.Random) -> chess.Move | None:
    """A move losing at least ``cfg.blunder_loss`` win probability, drawn uniformly among all such moves of
    one search that scores every legal move; ``None`` when the position is decided or has no such move."""
    count = board.legal_moves.count()
    lines = scored_moves(engine, start_fen, multipv_go(cfg, count), played, count)
    if not lines:
        return None
    best = max(p for _, p in lines)
    if not UNDECIDED[0] < best < UNDECIDED[1]:
        return None
    losing = [chess.Move.from_uci(m) for m, p in lines if best - p >= cfg.blunder_loss]
    losing = [m for m in losing if m in board.legal_moves]
    return rng.choice(losing) if losing else None


def configure(engine: Stockfish, side: SideSettings, multipv: int) -> None:
    """Set the options for ``side``; unchanged values are not re-sent."""
    engine.set_option("UCI_LimitStrength", side.policy == "elo")
    if side.elo is not None:
        engine.set_option("UCI_Elo", side.elo)
    engine.set_option("Skill Level", side.skill if side.policy == "skill" else 20)
    engine.set_option("MultiPV", multipv if side.policy == "multipv" else 1)


def sample_move(result: StockfishSearch, temperature: float, rng: random.Random) -> tuple[str | None, float | None]:
    """Draw a move from the MultiPV lines: softmax of win probability / T.

    Returns the move and the best line's win probability (``None``, ``None``
    when the search reported no lines).
    """
    lines = [line for _, line in sorted(result.lines.items())]
    if not lines:
        return result.bestmove, None
    probs = [score_to_win_prob(line.score) for line in lines]
    best = max(probs)
    if temperature <= 0:
        return lines[probs.index(best)].move, best
    weights = [math.exp((p - best) / temperature) for p in probs]
    choice = rng.choices(range(len(lines)), weights=weights)[0]
    return lines[choice].move, best


def play_game(engine: Stockfish, cfg: SelfPlayConfig, index: int) -> SelfPlayGame:
    """Play game ``index`` (deterministic choices from ``cfg.seed`` and ``index``).

    :raises EngineError: if Stockfish dies; the caller may restart it and retry.
    """
    rng = random.Random(f"{cfg.seed}/{index}")
    board = chess.Board(rng.choice(cfg.book)) if cfg.book else chess.Board()
    first_fen = board.fen()
    fens: list[str] = []
    for _ in range(rng.randint(*cfg.random_plies)):
        moves = list(board.legal_moves)
        if not moves:
            break
        fens.append(board.fen())
        board.push(uniform_move(board, rng))
    sides = draw_sides(rng, cfg)
    # Drawn only when asked for, so that games without them are the games they always were.
    randoms = random_plies(rng, cfg)
    opening = rng.randint(*cfg.opening_plies) if cfg.opening_temperature is not None else 0
    model = model_engine(cfg.model, cfg.model_temperature) if cfg.model is not None else None
    if model is not None:
        model.rng.seed(f"{cfg.seed}/{index}/model")
    start_fen = board.fen()
    played: list[str] = []
    engine.new_game()
    decided = 0
    reason = ""
    made_random = blunders = 0
    while True:
        outcome = board.outcome(claim_draw=True)
        if outcome is not None:
            reason = outcome.termination.name.lower()
            break
        if len(board.move_stack) >= cfg.max_plies:
            reason = "max_plies"
            break
        fens.append(board.fen())
        side = sides[board.turn]
        ply = len(board.move_stack) + 1
        move: chess.Move | None = None
        best: float | None = None
        if ply in randoms:
            move = random_move(engine, board, cfg, start_fen, played, rng)
            made_random += 1
        elif (cfg.blunder_rate and side.policy != MODEL and ply >= cfg.blunder_after
              and rng.random() < cfg.blunder_rate):
            move = blunder_move(engine, board, cfg, start_fen, played, rng)
            blunders += move is not None
        if move is None and side.policy == MODEL:
            assert model is not None
            choice = model.choose_move(board)
            move = choice.bestmove
            best = choice.ranked[0].win_prob if choice.ranked else None
        elif move is None:
            configure(engine, side, cfg.multipv)
            result = engine.search(start_fen, cfg.go, played)
            if side.policy == "multipv":
                hot = ply <= opening and cfg.opening_temperature is not None
                uci, best = sample_move(result, cfg.opening_temperature if hot else side.temperature, rng)
            else:
                uci = result.bestmove
                first = result.lines.get(1)
                best = score_to_win_prob(first.score) if first is not None else None
            move = chess.Move.from_uci(uci) if uci else None
        if move is None or move not in board.legal_moves:
            # A weakened engine never plays an illegal move; this guards against odd engines.
            move = uniform_move(board, rng)
        if best is not None:
            decided = decided + 1 if best > 0.99 or best < 0.01 else 0
        elif ply not in randoms and side.policy != MODEL:
            decided = 0
        if cfg.adjudicate_plies and decided >= cfg.adjudicate_plies:
            reason = "adjudicated"
            break
        board.push(move)
        played.append(move.uci())
    outcome = board.outcome(claim_draw=True)
    return SelfPlayGame(game_id(cfg.seed, index), fens, outcome.result() if outcome else "*", reason,
                        (sides[chess.WHITE].describe(), sides[chess.BLACK].describe()), made_random, blunders,
                        moves=[m.uci() for m in board.move_stack], start_fen=first_fen,
                        elos=(approx_elo(sides[chess.WHITE]), approx_elo(sides[chess.BLACK])))


def play_with_restarts(slot: EngineSlot, cfg: SelfPlayConfig, index: int, attempts: int = 4,
                       on_restart: Callable[[EngineError], None] | None = None) -> SelfPlayGame:
    """:func:`play_game` as every self-play worker runs it: a Stockfish that dies (or hangs) is restarted
    and the game replayed (``on_restart`` is told), up to ``attempts`` tries; then the
    :class:`EngineError` is raised."""
    for attempt in range(attempts):
        try:
            return play_game(slot.get(), cfg, index)
        except EngineError as exc:
            slot.drop()
            if attempt == attempts - 1:
                raise
            if on_restart is not None:
                on_restart(exc)
    raise AssertionError("unreachable")


@dataclass
class SelfPlayWork:
    """What a self-play worker does (see :class:`neuralengine.data.scheduler.Work`): items are game indices."""

    command: list[str]
    cfg: SelfPlayConfig

    def engine_slot(self) -> EngineSlot:
        return EngineSlot(self.command, self.cfg.hash_mb, search_timeout_for(self.cfg.go))

    def run(self, slot: EngineSlot, index: int, emit: Emit) -> SelfPlayGame:
        return play_with_restarts(slot, self.cfg, index, on_restart=lambda exc: emit("restart", reason=str(exc)))

    def describe(self, index: int) -> str:
        return f"game {game_id(self.cfg.seed, index)}"

    def size(self, index: int) -> int:
        return 1


def play_games(command: list[str], cfg: SelfPlayConfig, games: int, backend: Backend, skip: set[str],
               progress: Any = None, postfix: Callable[[Scheduler], str] | None = None) -> Iterator[SelfPlayGame]:
    """Play games ``0..games-1`` (minus the ids in ``skip``) on ``backend``; yield them in order.

    :raises EngineError: when a game fails even after Stockfish restarts.
    """
    todo = [i for i in range(games) if game_id(cfg.seed, i) not in skip]
    if not todo:
        return
    work = SelfPlayWork(command, cfg)
    outcomes = Scheduler(work, backend, todo, name="datagen", ordered=True, progress=progress, postfix=postfix).run()
    with contextlib.closing(outcomes):  # the workers stop when the caller stops early
        for outcome in outcomes:
            if outcome.error is not None:
                raise EngineError(f"self-play {work.describe(outcome.item)} failed: {outcome.error}")
            yield outcome.result
