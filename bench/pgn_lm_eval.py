"""How well a ``pgn_lm`` text model plays: its unmasked legal-move rate, and short matches.

* **Legal-move rate.** Over the positions of held-out games (``.txt`` transcripts of ``neuralengine datagen
  --pgn``, or PGN files), the model is given the game so far (and, before a white move, the move number and
  its dot, as Chess-GPT's evaluation does) and writes characters greedily up to the separator, with no mask.
  The text is *legal* when it is the SAN of a legal move (``strict``: exactly the SAN python-chess writes;
  ``parsed``: any text python-chess's SAN parser accepts, e.g. a missing ``+``). Also: how often the text is
  the move that was played in the game. Positions stop where the game no longer fits the context.
* **Matches** (``--match-games``): ``neuralengine match`` against the random mover and against Stockfish
  ``UCI_Elo`` 1350 (the default opponents), from the built-in openings (played as games from the initial
  position for a text model), without the engine's mate rule, games drawn after ``--max-moves``.
* **Mate-in-one puzzles** (``--mate-puzzles N``): every position of the held-out games where the side to move
  can mate at once, as a puzzle file with the game's moves, through ``neuralengine puzzles`` (mate rule off).

It is a measurement, not a test: ``pytest bench -k pgn_lm_eval`` runs it once on the small committed model.

    python bench/pgn_lm_eval.py --weights run/model.safetensors --data data/test.txt --games 200
    python bench/pgn_lm_eval.py --weights run/model.safetensors --data data/test.txt --match-games 20 --out ev/
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import chess


def legal_move_rate(weights: str | Path, data: Sequence[str | Path], games: int = 100,
                    progress: bool = False) -> dict[str, Any]:
    """The unmasked legal-move rate of the model's greedy text over the positions of ``games`` games."""
    from neuralengine.progress import Progress
    from neuralengine.research.text_probe import load_games
    from neuralengine.textlm.model import TextLM
    from neuralengine.textlm.transcript import Vocabulary, move_text

    model = TextLM.load(weights)
    vocab = Vocabulary(model.config.vocabulary)
    space = vocab.index[" "]
    block = model.config.block_size
    played = load_games([Path(p) for p in data], games)
    counts = {"positions": 0, "strict": 0, "parsed": 0, "game_move": 0, "white_positions": 0, "white_strict": 0}
    by_phase = {"1-10": [0, 0], "11-30": [0, 0], "31+": [0, 0]}
    bar = Progress("legal-move rate", total=len(played), unit="games", enabled=progress)
    for game in played:
        board = chess.Board()
        cache, logits = model.read(vocab.encode(";"))
        length = 1
        for move in game.moves:
            text = move_text(board, move)
            if length + len(text) + 8 > block:
                break
            if board.turn == chess.WHITE:
                number = f"{board.fullmove_number}."
                tmp, last = model.read(vocab.encode(number), cache)
            else:
                tmp, last = cache, logits
            written = vocab.decode(model.greedy(tmp, last, space, 10)).rstrip(" ")
            legal_san = {board.san(m) for m in board.legal_moves}
            strict = written in legal_san
            try:
                board.parse_san(written)
                parsed = True
            except ValueError:
                parsed = False
            counts["positions"] += 1
            counts["strict"] += strict
            counts["parsed"] += parsed
            counts["game_move"] += written == board.san(move)
            if board.turn == chess.WHITE:
                counts["white_positions"] += 1
                counts["white_strict"] += strict
            n = board.fullmove_number
            phase = "1-10" if n <= 10 else "11-30" if n <= 30 else "31+"
            by_phase[phase][0] += 1
            by_phase[phase][1] += strict
            cache, logits = model.read(vocab.encode(text), cache)
            length += len(text)
            board.push(move)
        bar.update(1)
    bar.close()
    n = max(counts["positions"], 1)
    return {
        "games": len(played), "positions": counts["positions"],
        "legal_rate": counts["strict"] / n, "legal_rate_parsed": counts["parsed"] / n,
        "game_move_rate": counts["game_move"] / n,
        "legal_rate_white": counts["white_strict"] / max(counts["white_positions"], 1),
        "legal_rate_by_move_number": {k: (v[1] / v[0] if v[0] else None) for k, v in by_phase.items()},
        "positions_by_move_number": {k: v[0] for k, v in by_phase.items()},
    }


def mate_puzzles(data: Sequence[str | Path], path: Path, limit: int, block_size: int = 1023) -> int:
    """Mate-in-one puzzles from held-out games, in the Lichess CSV format with a ``GameMoves`` column.

    Every position of the games where the side to move can mate at once (and the game still fits the context)
    becomes a puzzle: ``FEN`` is the position before the opponent's last move, ``Moves`` that move and one
    mate. Any mate solves it. Returns the number written."""
    import csv

    from neuralengine.research.text_probe import load_games
    from neuralengine.textlm.transcript import transcript

    rows = []
    for game in load_games([Path(p) for p in data], 10 ** 6):
        board = chess.Board()
        for ply, move in enumerate(game.moves):
            board.push(move)
            if len(rows) >= limit or len(transcript(board)) + 12 > block_size:
                break
            mates = [m for m in board.legal_moves if board.gives_check(m) and _mates(board, m)]
            if mates and ply >= 1:
                before = board.copy()
                last = before.pop()
                rows.append({"PuzzleId": f"{game.game}@{ply}", "FEN": before.fen(),
                             "Moves": f"{last.uci()} {mates[0].uci()}", "Rating": 1000, "RatingDeviation": 0,
                             "Popularity": 0, "NbPlays": 0, "Themes": "mate mateIn1", "GameUrl": "",
                             "OpeningTags": "", "GameMoves": " ".join(m.uci() for m in before.move_stack)})
        if len(rows) >= limit:
            break
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["PuzzleId", "FEN", "Moves", "Rating"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def _mates(board: chess.Board, move: chess.Move) -> bool:
    board.push(move)
    try:
        return board.is_checkmate()
    finally:
        board.pop()


def run_puzzles(weights: str | Path, data: Sequence[str | Path], out: Path, limit: int) -> dict[str, Any]:
    """``neuralengine puzzles`` on mate-in-one puzzles of the held-out games, without the engine's mate rule."""
    out.mkdir(parents=True, exist_ok=True)
    from neuralengine.weights import read_metadata

    block = int(read_metadata(weights)["architecture"]["block_size"])
    n = mate_puzzles(data, out / "mate_puzzles.csv", limit, block)
    if not n:
        return {"puzzles": 0}
    cmd = [sys.executable, "-m", "neuralengine", "puzzles", str(out / "mate_puzzles.csv"), "--weights", str(weights),
           "--engine-option", "MateRule=false", "--out", str(out / "puzzles"), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    report_path = out / "puzzles" / "puzzles.json"
    if proc.returncode != 0 or not report_path.exists():
        return {"puzzles": n, "exit": proc.returncode, "stderr": proc.stderr[-2000:]}
    overall = json.loads(report_path.read_text(encoding="utf-8"))["accuracy"]["overall"]
    return {"puzzles": n, "solved": overall["solved"], "accuracy": overall["accuracy"],
            "command": " ".join(["neuralengine"] + cmd[3:])}


def run_matches(weights: str | Path, out: Path, games: int, tc: str, opponents: Sequence[str], max_moves: int = 80,
                mate_rule: bool = False) -> dict[str, Any]:
    """``neuralengine match`` against each opponent (``random`` or ``elo:N``); returns each one's score.

    The engine plays without its mate rule (the model's own choices), and a game still going after
    ``max_moves`` full moves is drawn, so that the games stay inside a 1,023-character context (about 89
    moves) and the fallback model never plays."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for opponent in opponents:
        flag = ["--random-mover"] if opponent == "random" else ["--stockfish-elo", opponent.split(":", 1)[1]]
        folder = out / f"match-{opponent.replace(':', '')}"
        cmd = [sys.executable, "-m", "neuralengine", "match", "--weights", str(weights), *flag, "--games", str(games),
               "--tc", tc, "--max-moves", str(max_moves),
               "--engine-option", f"MateRule={'true' if mate_rule else 'false'}", "--out", str(folder), "--quiet"]
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        report = _match_report(folder)
        results[opponent] = {"exit": proc.returncode, "seconds": round(time.monotonic() - started, 1),
                             "command": " ".join(["neuralengine"] + cmd[3:]), **report}
        if proc.returncode != 0 and not report:
            results[opponent]["stderr"] = proc.stderr[-2000:]
    return results


def _match_report(folder: Path) -> dict[str, Any]:
    path = folder / "match.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    [opp] = data["opponents"]
    games = opp["games"]
    return {"games": games, "wins": opp["wins"], "draws": opp["draws"], "losses": opp["losses"],
            "score": (opp["wins"] + 0.5 * opp["draws"]) / games if games else None,
            "elo": opp["elo"], "elo_lower": opp["elo_lower"], "elo_upper": opp["elo_upper"],
            "illegal_moves": data["soak"]["illegal_moves"], "match_json": str(path)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="a pgn_lm weights file")
    p.add_argument("--data", nargs="+", required=True, help="held-out games: .txt transcripts or PGN files")
    p.add_argument("--games", type=int, default=100, help="games whose positions are scored (default 100)")
    p.add_argument("--match-games", type=int, default=0, help="games per match opponent (default 0: no matches)")
    p.add_argument("--opponents", default="random,elo:1350", help="random and/or elo:N (default random,elo:1350)")
    p.add_argument("--tc", default="40+0.5", help="match time control (default 40+0.5: a text model on a loaded CPU "
                                                  "needs up to half a second a move)")
    p.add_argument("--max-moves", type=int, default=80,
                   help="a match game still going after this many full moves is drawn (default 80: the games stay "
                        "inside the model's context)")
    p.add_argument("--mate-rule", action="store_true", help="let the engine play a mate in one itself (default off: "
                                                               "the model's own choices)")
    p.add_argument("--mate-puzzles", type=int, default=0,
                   help="mate-in-one puzzles from the held-out games (default 0: none)")
    p.add_argument("--out", type=Path, help="folder for eval.json, the matches and the puzzles")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    for path in args.data:
        if not Path(path).exists():
            print(f"pgn_lm_eval: no such file: {path}", file=sys.stderr)
            return 2
    result: dict[str, Any] = {"weights": str(args.weights)}
    result["legal"] = legal_move_rate(args.weights, args.data, args.games, progress=not args.quiet)
    if args.match_games:
        if args.out is None:
            print("pgn_lm_eval: --match-games needs --out", file=sys.stderr)
            return 2
        result["matches"] = run_matches(args.weights, args.out, args.match_games, args.tc,
                                        [o for o in args.opponents.split(",") if o], args.max_moves, args.mate_rule)
    if args.mate_puzzles:
        if args.out is None:
            print("pgn_lm_eval: --mate-puzzles needs --out", file=sys.stderr)
            return 2
        result["mate_puzzles"] = run_puzzles(args.weights, args.data, args.out, args.mate_puzzles)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "eval.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        legal = result["legal"]
        print(f"legal-move rate (unmasked, greedy): {legal['legal_rate']:.3f} strict, {legal['legal_rate_parsed']:.3f} "
              f"parsed, over {legal['positions']} positions of {legal['games']} games; the game's move "
              f"{legal['game_move_rate']:.3f}; by move number {legal['legal_rate_by_move_number']}")
        if "mate_puzzles" in result:
            mp = result["mate_puzzles"]
            print(f"mate-in-one puzzles from the held-out games: {mp.get('solved', '-')} of {mp['puzzles']} solved"
                  + (f" ({100 * mp['accuracy']:.1f} %)" if mp.get("accuracy") is not None else f" {mp.get('stderr', '')}"))
        for name, m in result.get("matches", {}).items():
            if "score" in m:
                print(f"match vs {name}: +{m['wins']} ={m['draws']} -{m['losses']} of {m['games']}, score "
                      f"{m['score']:.3f} ({m['seconds']} s)")
            else:
                print(f"match vs {name}: failed (exit {m['exit']}): {m.get('stderr', '')[-300:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
