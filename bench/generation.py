"""Measure one model generation for the model card's generation table.

    python bench/generation.py --weights runs/gen1/model.safetensors \
        --previous weights/neuralengine.safetensors --out matches/gen1
    pytest bench -k generation      # every step once, with a few puzzles and games

Runs, one after the other, each through the ``neuralengine`` command so that
every number can be reproduced by hand:

1. Lichess puzzles with and without the mate-in-one rule (``puzzles``);
2. a match against a uniformly random mover (``match --random-mover``);
3. a match against the previous generation (``match --opponent``), the gate
   for shipping: the lower end of the 95 % interval must be above 0, or an
   SPRT must accept;
4. a match against Stockfish 15.1 at ``UCI_Elo`` 1350.

Every match checks the new generation's moves with Stockfish (``match
--check-depth``, depth 10 by default): the share of its moves losing more than
0.1 / 0.2 / 0.3 win probability and the median ply of each game's first
blunder (a loss above 0.3) go into ``summary.json`` and the table row, all
matches together and per match.

Each step writes its own folder under ``--out`` (JSON, PGN, plot) and shows
its progress; ``summary.json`` and a Markdown table row collect the results.
Steps whose output already exists are not run again, so an interrupted
evaluation resumes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PUZZLES = ROOT / "tests" / "data" / "shared" / "lichess_puzzles_500.csv"


def run(step: str, args: list[str], done: Path) -> dict:
    """Run ``python -m neuralengine ARGS`` unless ``done`` exists; return its JSON."""
    if not done.exists():
        print(f"\n== {step}: neuralengine {shlex.join(args)}", flush=True)
        subprocess.run([sys.executable, "-m", "neuralengine", *args], check=True, cwd=ROOT)
    return json.loads(done.read_text())


def match_row(report: dict) -> dict:
    row = report["opponents"][0]
    games = row["games"]
    score = (row["wins"] + 0.5 * row["draws"]) / games if games else float("nan")
    return {"games": games, "wins": row["wins"], "draws": row["draws"], "losses": row["losses"],
            "score": score, "elo": row["elo"], "elo_lower": row["elo_lower"], "elo_upper": row["elo_upper"],
            **({"sprt": row["sprt"]["verdict"]} if "sprt" in row else {}),
            **({"move_check": report["move_check"]} if report.get("move_check") else {})}


def move_quality(summary: dict) -> dict | None:
    """The move checks of every match of the gate together: shares of moves losing more than each
    threshold, and the median ply of each game's first blunder."""
    checks = [summary[k]["move_check"] for k in ("random", "previous", "stockfish")
              if k in summary and "moves" in summary[k].get("move_check", {})]
    moves = sum(c["moves"] for c in checks)
    if not moves:
        return None
    shares = {t: sum(c["share_losing_more_than"][t] * c["moves"] for c in checks if c["moves"]) / moves
              for t in checks[0]["share_losing_more_than"]}
    firsts = [ply for c in checks for ply in c.get("first_blunder_plies", [])]
    return {"moves": moves, "games": sum(c["games"] for c in checks), "depth": checks[0]["depth"],
            "share_losing_more_than": shares, "games_with_blunder": sum(c["games_with_blunder"] for c in checks),
            "first_blunder_ply_median": statistics.median(firsts) if firsts else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="the new generation's weights file")
    p.add_argument("--previous", help="the previous generation's weights file (the shipped model)")
    p.add_argument("--puzzles", default=str(DEFAULT_PUZZLES), help="Lichess puzzle CSV (default: the 500 of "
                   "tests/data/shared)")
    p.add_argument("--puzzle-limit", type=int, help="only the first N puzzles (default: all)")
    p.add_argument("--random-games", type=int, default=40)
    p.add_argument("--previous-games", type=int, default=200)
    p.add_argument("--stockfish-games", type=int, default=40)
    p.add_argument("--stockfish-elo", type=int, default=1350)
    p.add_argument("--tc", default="10+0.1")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--check-depth", type=int, default=10,
                   help="Stockfish depth of the check of every move of the new generation (0: none; default 10)")
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    weights = str(Path(args.weights).resolve())
    summary: dict = {"weights": weights}
    common = ["--weights", weights, "--tc", args.tc, "--concurrency", str(args.concurrency), "--tool", "builtin",
              "--check-depth", str(args.check_depth)]

    if Path(args.puzzles).is_file():
        for label, extra in (("puzzles", []), ("puzzles_no_mate_rule", ["--engine-option", "MateRule=false"])):
            limit = ["--limit", str(args.puzzle_limit)] if args.puzzle_limit else []
            report = run(label, ["puzzles", args.puzzles, "--weights", weights, "--depth", "1", *limit, *extra,
                                 "--out", str(out / label)], out / label / "puzzles.json")
            summary[label] = report["accuracy"]["overall"]
    if args.random_games:
        report = run("random mover", ["match", *common, "--random-mover", "--games", str(args.random_games),
                                      "--out", str(out / "random")], out / "random" / "match.json")
        summary["random"] = match_row(report)
    if args.previous and args.previous_games:
        previous = shlex.join([sys.executable, "-m", "neuralengine", "uci", "--weights",
                               str(Path(args.previous).resolve())])
        report = run("previous generation", ["match", *common, "--opponent", f"previous={previous}",
                                             "--games", str(args.previous_games), "--out", str(out / "previous")],
                     out / "previous" / "match.json")
        summary["previous"] = match_row(report)
    if args.stockfish_games:
        report = run(f"Stockfish {args.stockfish_elo}", ["match", *common, "--stockfish-elo", str(args.stockfish_elo),
                                                          "--games", str(args.stockfish_games),
                                                          "--out", str(out / "stockfish")],
                     out / "stockfish" / "match.json")
        summary["stockfish"] = match_row(report)
    quality = move_quality(summary)
    if quality:
        summary["move_quality"] = quality
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    def pct(entry: dict | None, key: str = "accuracy") -> str:
        return "—" if not entry else f"{100 * entry[key]:.1f} %"

    def score(entry: dict | None) -> str:
        if not entry:
            return "—"
        text = f"{100 * entry['score']:.1f} % (+{entry['wins']} ={entry['draws']} −{entry['losses']}"
        if all(isinstance(entry.get(k), (int, float)) for k in ("elo", "elo_lower", "elo_upper")):
            text += f"; Elo {entry['elo']:+.0f}, 95 % {entry['elo_lower']:+.0f} to {entry['elo_upper']:+.0f}"
        return text + ")"

    def losing(check: dict | None) -> str:
        if not check or "share_losing_more_than" not in check:
            return "—"
        s = check["share_losing_more_than"]
        return " / ".join("—" if s[t] is None else f"{100 * s[t]:.1f}" for t in ("0.1", "0.2", "0.3")) + " %"

    print("\n| puzzles | puzzles, no mate rule | vs previous | vs random | vs Stockfish "
          "| moves losing > 0.1 / 0.2 / 0.3 (all matches) | same, vs Stockfish | first blunder, median ply "
          "(vs Stockfish) |")
    sf_check = (summary.get("stockfish") or {}).get("move_check") or {}
    median = sf_check.get("first_blunder_ply_median")
    print(f"| {pct(summary.get('puzzles'))} | {pct(summary.get('puzzles_no_mate_rule'))} | "
          f"{score(summary.get('previous'))} | {score(summary.get('random'))} | {score(summary.get('stockfish'))} "
          f"| {losing(summary.get('move_quality'))} | {losing(sf_check)} "
          f"| {'—' if median is None else f'{median:g}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
