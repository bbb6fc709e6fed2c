"""Games as text: PGN files and one-line move transcripts, for training text models.

``neuralengine datagen --pgn`` writes self-play games here instead of positions. The output folder gets

* ``train.pgn`` and ``test.pgn``: the games with headers (players, approximate Elo, result, termination, id);
* ``train.txt`` and ``test.txt``: one game per line,
  ``GAME_ID<TAB>WHITE_ELO<TAB>BLACK_ELO<TAB>RESULT<TAB>TRANSCRIPT``, where the transcript is the movetext in the
  form the character-level models read: ``;1.e4 e5 2.Nf3 Nc6`` (a leading ``;``, SAN, no space after the move
  number's dot, one space between moves, no result; :func:`neuralengine.textlm.transcript.transcript`). An
  unknown Elo is ``-``. Games that do not start from the initial position (``--book``) have no transcript:
  they go to the PGN files only.

The split is by a hash of the game id (:func:`neuralengine.data.text.is_test_game`), as for positions. Games
already in the ``.txt`` files are skipped on ``--resume``; a line cut off by a kill is dropped first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import chess
import chess.pgn

from neuralengine.atomic import write_bytes
from neuralengine.data.text import is_test_game
from neuralengine.textlm.transcript import transcript

SPLITS = ("train", "test")


@dataclass
class TranscriptGame:
    """One line of a ``.txt`` transcript file."""

    game_id: str
    white_elo: int | None
    black_elo: int | None
    result: str
    text: str

    def line(self) -> str:
        def elo(v: int | None) -> str:
            return "-" if v is None else str(v)

        return f"{self.game_id}\t{elo(self.white_elo)}\t{elo(self.black_elo)}\t{self.result}\t{self.text}\n"


def parse_line(line: str) -> TranscriptGame | None:
    """A transcript line, or ``None`` for a line that is not one."""
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 5 or not parts[4].startswith(";"):
        return None

    def elo(v: str) -> int | None:
        return int(v) if v.isdigit() else None

    return TranscriptGame(parts[0], elo(parts[1]), elo(parts[2]), parts[3], parts[4])


def read_transcripts(paths: Sequence[str | Path]) -> Iterator[TranscriptGame]:
    """Every game of the ``.txt`` transcript files (lines that are not transcripts are skipped)."""
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                game = parse_line(line)
                if game is not None:
                    yield game


class TranscriptWriter:
    """Appends games to ``{train,test}.{pgn,txt}``."""

    def __init__(self, out_dir: Path, test_fraction: float, resume: bool) -> None:
        self.test_fraction = test_fraction
        self.games_seen: set[str] = set()
        self.counts = {"games": 0, "train": 0, "test": 0}
        out_dir.mkdir(parents=True, exist_ok=True)
        self.files: dict[tuple[str, str], object] = {}
        for split in SPLITS:
            txt = out_dir / f"{split}.txt"
            if resume and txt.exists():
                raw = txt.read_bytes()
                if raw and not raw.endswith(b"\n"):
                    write_bytes(txt, raw[: raw.rfind(b"\n") + 1])
                for game in read_transcripts([txt]):
                    self.games_seen.add(game.game_id)
                    self.counts[split] += 1
            for ext in ("txt", "pgn"):
                self.files[(split, ext)] = open(out_dir / f"{split}.{ext}", "a" if resume else "w",
                                                encoding="utf-8")

    def add_game(self, gid: str, start_fen: str, moves: Sequence[str], result: str, reason: str,
                 players: tuple[str, str], elos: tuple[int | None, int | None]) -> None:
        """Write one game (moves in UCI from ``start_fen``) to its split's PGN and transcript file."""
        split = "test" if is_test_game(gid, self.test_fraction) else "train"
        board = chess.Board(start_fen)
        game = chess.pgn.Game()
        if start_fen != chess.STARTING_FEN:
            game.setup(board)
        game.headers["Event"] = "neuralengine datagen self-play"
        game.headers["White"] = f"Stockfish {players[0]}"
        game.headers["Black"] = f"Stockfish {players[1]}"
        for colour, elo in zip(("White", "Black"), elos):
            if elo is not None:
                game.headers[f"{colour}Elo"] = str(elo)
        game.headers["Result"] = result
        game.headers["Termination"] = reason
        game.headers["GameId"] = gid
        node: chess.pgn.GameNode = game
        parsed = [chess.Move.from_uci(m) for m in moves]
        for move in parsed:
            node = node.add_variation(move)
        pgn = self.files[(split, "pgn")]
        pgn.write(str(game) + "\n\n")  # type: ignore[attr-defined]
        pgn.flush()  # type: ignore[attr-defined]
        if start_fen == chess.STARTING_FEN:
            txt = self.files[(split, "txt")]
            txt.write(TranscriptGame(gid, elos[0], elos[1], result, transcript(parsed)).line())  # type: ignore[attr-defined]
            txt.flush()  # type: ignore[attr-defined]
        self.games_seen.add(gid)
        self.counts["games"] += 1
        self.counts[split] += 1

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()  # type: ignore[attr-defined]
