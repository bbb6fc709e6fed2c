"""Checking a lichess-bot configuration file before the engine plays with it.

lichess-bot reads a YAML file, fills in defaults and refuses to start on
values it does not accept; a misspelt key it ignores without a word. The
rules here restate, in our own words, which keys its ``lib/config.py`` and
``lib/model.py`` read and which values they accept, add the limits Lichess
sets for bots, and check ``engine.uci_options`` against the options that
neuralengine declares. ``neuralengine lichess check [CONFIG]`` runs them;
the ``lichess/neuralengine-lichess`` launcher runs that command on
lichess-bot's ``config.yml`` before it starts the engine, and stops with the
one-line message on a bad file.

The token is not checked: lichess-bot takes it from ``LICHESS_BOT_TOKEN``
and says so itself when it is missing. Reading YAML needs PyYAML, which
lichess-bot installs; without it the check says that it cannot run (exit
status 3), and the launcher starts the engine all the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

#: Exit status of ``neuralengine lichess check``: the file has problems (or cannot be read).
EXIT_PROBLEMS = 1
#: ... the check cannot run here (no PyYAML).
EXIT_CANNOT_CHECK = 3

#: The file lichess-bot reads when it is started without ``--config``.
DEFAULT_CONFIG = "config.yml"

#: Options that python-chess sets by itself; lichess-bot drops them from ``uci_options``.
MANAGED_OPTIONS = frozenset({"uci_chess960", "uci_variant", "multipv", "ponder"})
#: The only keys of ``engine.uci_options.go_commands`` lichess-bot reads.
GO_COMMANDS = ("movetime", "depth", "nodes")


class Choice:
    """A string (or list of strings) from a fixed set."""

    def __init__(self, *allowed: str, many: bool = False) -> None:
        self.allowed = allowed
        self.many = many


class Mapping:
    """A mapping with free keys (UCI options, books, overrides)."""


NUM = (int, float)
OPT_STR = (str, type(None))
OPT_INT = (int, type(None))
NUM_LIST = (list, int, type(None))  # lichess-bot turns a single value into a one-element list.
STR_LIST = (list, type(None))

LICHESS_VARIANTS = ("standard", "fromPosition", "antichess", "atomic", "chess960", "crazyhouse", "horde",
                    "kingOfTheHill", "racingKings", "threeCheck")
#: Bots may not play ultraBullet on Lichess, so lichess-bot never accepts it.
BOT_SPEEDS = ("bullet", "blitz", "rapid", "classical", "correspondence")
QUALITY_BEST_SUGGEST = Choice("best", "suggest")

ONLINE_SOURCE = {"enabled": bool, "min_time": NUM, "max_time": NUM}

#: Every key that lichess-bot reads, with the type or choices it accepts.
SCHEMA: dict[str, Any] = {
    "token": str,
    "url": str,
    "engine": {
        "dir": str,
        "name": str,
        "working_dir": OPT_STR,
        "protocol": Choice("uci", "xboard", "homemade"),
        "ponder": bool,
        "uci_ponder": bool,
        "debug": bool,
        "silence_stderr": bool,
        "interpreter": OPT_STR,
        "interpreter_options": NUM_LIST,
        "engine_options": Mapping(),
        "polyglot": {
            "enabled": bool,
            "book": Mapping(),
            "min_weight": NUM,
            "selection": Choice("weighted_random", "uniform_random", "best_move"),
            "max_depth": int,
            "normalization": Choice("none", "max", "sum"),
        },
        "draw_or_resign": {
            "resign_enabled": bool,
            "resign_score": int,
            "resign_for_egtb_minus_two": bool,
            "resign_moves": int,
            "offer_draw_enabled": bool,
            "offer_draw_score": int,
            "offer_draw_for_egtb_zero": bool,
            "offer_draw_moves": int,
            "offer_draw_pieces": int,
        },
        "online_moves": {
            "max_out_of_book_moves": int,
            "max_retries": int,
            "max_depth": NUM,
            "chessdb_book": ONLINE_SOURCE | {"move_quality": Choice("all", "good", "best"), "min_depth": int},
            "lichess_cloud_analysis": ONLINE_SOURCE | {"move_quality": Choice("good", "best"),
                                                       "max_score_difference": NUM, "min_depth": int,
                                                       "min_knodes": NUM},
            "lichess_opening_explorer": ONLINE_SOURCE | {"source": Choice("lichess", "masters", "player"),
                                                         "player_name": OPT_STR,
                                                         "sort": Choice("winrate", "games_played"),
                                                         "min_games": int},
            "online_egtb": ONLINE_SOURCE | {"max_pieces": int, "source": Choice("lichess", "chessdb"),
                                            "move_quality": QUALITY_BEST_SUGGEST},
        },
        "lichess_bot_tbs": {
            "syzygy": {"enabled": bool, "paths": STR_LIST, "max_pieces": int, "move_quality": QUALITY_BEST_SUGGEST},
            "gaviota": {"enabled": bool, "paths": STR_LIST, "max_pieces": int, "min_dtm_to_consider_as_wdl_1": int,
                        "move_quality": QUALITY_BEST_SUGGEST},
        },
        "uci_options": Mapping(),
        "xboard_options": Mapping(),
        "homemade_options": (dict, type(None)),
    },
    "abort_time": NUM,
    "fake_think_time": bool,
    "rate_limiting_delay": NUM,
    "move_overhead": NUM,
    "max_takebacks_accepted": int,
    "quit_after_all_games_finish": bool,
    "pgn_directory": OPT_STR,
    "pgn_file_grouping": Choice("game", "opponent", "all"),
    "correspondence": {"move_time": NUM, "checkin_period": NUM, "disconnect_time": NUM, "ponder": bool,
                       "uci_ponder": bool},
    "challenge": {
        "concurrency": int,
        "games_reserved_for_humans": int,
        "sort_by": Choice("best", "first"),
        "preference": Choice("none", "human", "bot"),
        "accept_bot": bool,
        "only_bot": bool,
        "max_increment": NUM,
        "min_increment": NUM,
        "max_base": NUM,
        "min_base": NUM,
        "max_days": NUM,
        "min_days": NUM,
        "variants": Choice(*LICHESS_VARIANTS, many=True),
        "time_controls": Choice(*BOT_SPEEDS, many=True),
        "modes": Choice("casual", "rated", many=True),
        "block_list": STR_LIST,
        "online_block_list": STR_LIST,
        "allow_list": STR_LIST,
        "recent_bot_challenge_age": NUM,
        "max_recent_bot_challenges": int,
        "min_rating": int,
        "max_rating": int,
        "rating_difference": OPT_INT,
        "bullet_requires_increment": bool,
        "max_simultaneous_games_per_user": int,
    },
    "greeting": {"hello": OPT_STR, "goodbye": OPT_STR, "hello_spectators": OPT_STR, "goodbye_spectators": OPT_STR},
    "matchmaking": {
        "allow_matchmaking": bool,
        "allow_during_games": bool,
        "challenge_variant": Choice("random", *LICHESS_VARIANTS),
        "challenge_timeout": NUM,
        "challenge_initial_time": NUM_LIST,
        "challenge_increment": NUM_LIST,
        "challenge_days": NUM_LIST,
        "opponent_min_rating": int,
        "opponent_max_rating": int,
        "opponent_rating_difference": OPT_INT,
        "rating_preference": Choice("none", "high", "low"),
        "challenge_mode": Choice("casual", "rated", "random"),
        "challenge_filter": Choice("none", "coarse", "fine"),
        "delay_after_decline": Choice("none", "coarse", "fine"),
        "block_list": STR_LIST,
        "online_block_list": STR_LIST,
        "include_challenge_block_list": bool,
        "challenge_decliner_file_name": (str, bool, type(None)),
        "overrides": (dict, type(None)),
    },
}


class ConfigError(Exception):
    """The file cannot be read as a lichess-bot configuration (missing, unreadable, not YAML)."""


class CannotCheck(Exception):
    """The check cannot run here (PyYAML is not installed)."""


def _type_name(expected: Any) -> str:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join("null" if kind is type(None) else kind.__name__ for kind in kinds)


def schema_problems(config: Any, schema: dict[str, Any] = SCHEMA, where: str = "") -> list[str]:
    """Keys lichess-bot does not read, and values of a type or choice it rejects."""
    if not isinstance(config, dict):
        return [f"{where.rstrip('.') or 'the file'} must be a mapping, not {config!r}"]
    problems = []
    for key, value in config.items():
        path = f"{where}{key}"
        if key not in schema:
            problems.append(f"{path}: lichess-bot has no such setting")
            continue
        expected = schema[key]
        if isinstance(expected, dict):
            if value is not None:  # An empty section is filled with defaults.
                problems += schema_problems(value, expected, f"{path}.")
        elif isinstance(expected, Mapping):
            if value is not None and not isinstance(value, dict):
                problems.append(f"{path}: must be a mapping")
        elif isinstance(expected, Choice):
            values = value if expected.many and isinstance(value, list) else [value]
            if expected.many and not isinstance(value, list):
                problems.append(f"{path}: must be a list")
            problems += [f"{path}: {item!r} is not one of {', '.join(expected.allowed)}"
                         for item in values if item not in expected.allowed]
        elif isinstance(value, bool) and expected in (int, NUM, OPT_INT, NUM_LIST):
            problems.append(f"{path}: must be a number, not {value!r}")
        elif not isinstance(value, expected):
            problems.append(f"{path}: must be {_type_name(expected)}, not {value!r}")
    return problems


def _section(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def _number(section: dict[str, Any], key: str, default: float) -> float | None:
    """A numeric setting (its default when absent); None when it is not a number (a type problem, said elsewhere)."""
    value = section.get(key, default)
    if value is None:
        return default
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def value_problems(config: dict[str, Any]) -> list[str]:
    """The cross-field rules of lichess-bot, plus Lichess's own limits for bots.

    Missing values take lichess-bot's defaults; values of the wrong type are
    left to :func:`schema_problems`.
    """
    problems = []
    challenge = _section(config, "challenge")
    matchmaking = _section(config, "matchmaking")
    engine = _section(config, "engine")

    for key in ("url", "engine", "challenge"):
        if key not in config:
            problems.append(f"required section {key} is missing")
    for key in ("dir", "name"):
        if not isinstance(engine.get(key), str):
            problems.append(f"engine.{key} is required and must be a string")

    concurrency = _number(challenge, "concurrency", 1)
    if concurrency is not None and not concurrency > 0:
        problems.append("challenge.concurrency must be positive or no game is ever accepted")
    reserved = _number(challenge, "games_reserved_for_humans", 0)
    if concurrency is not None and reserved is not None and not 0 <= reserved <= concurrency:
        problems.append("challenge.games_reserved_for_humans must lie between 0 and challenge.concurrency")

    bounds = {"increment": (0, 180), "base": (0, float("inf")), "days": (1, float("inf")), "rating": (0, 4000)}
    for name, (low_default, high_default) in bounds.items():
        low = _number(challenge, f"min_{name}", low_default)
        high = _number(challenge, f"max_{name}", high_default)
        if low is not None and high is not None and low > high:
            problems.append(f"challenge.min_{name} > challenge.max_{name}: nothing would be accepted")
    if (_number(challenge, "max_increment", 0) or 0) > 180:
        problems.append("challenge.max_increment: Lichess allows at most 180 s of increment")
    if (_number(challenge, "max_base", 0) or 0) > 10800:
        problems.append("challenge.max_base: Lichess allows at most 10800 s (3 hours) of base time")
    difference = _number(challenge, "rating_difference", 0)
    if difference is not None and difference < 0:
        problems.append("challenge.rating_difference < 0: nothing would be accepted")

    if matchmaking.get("allow_matchmaking") is True:
        has_clock = bool(_as_list(matchmaking.get("challenge_initial_time"))
                         and _as_list(matchmaking.get("challenge_increment")))
        if not (has_clock or _as_list(matchmaking.get("challenge_days"))):
            problems.append("matchmaking needs challenge_initial_time and challenge_increment, or challenge_days")
    low_rating = _number(matchmaking, "opponent_min_rating", 600)
    high_rating = _number(matchmaking, "opponent_max_rating", 4000)
    if low_rating is not None and high_rating is not None and low_rating > high_rating:
        problems.append("matchmaking.opponent_min_rating > opponent_max_rating")
    variant = matchmaking.get("challenge_variant", "random")
    variants = challenge.get("variants") if isinstance(challenge.get("variants"), list) else []
    if variant not in ("random", *(v for v in variants if v != "fromPosition")):
        problems.append(f"matchmaking.challenge_variant {variant!r} is not an accepted variant we can challenge in")
    timeout = _number(matchmaking, "challenge_timeout", 30)
    if timeout is not None and timeout < 1:
        problems.append("matchmaking.challenge_timeout is at least one minute")

    uci_options = engine.get("uci_options")
    if isinstance(uci_options, dict):
        problems += uci_option_problems(uci_options)
    return problems


def uci_option_problems(options: dict[str, Any]) -> list[str]:
    """``engine.uci_options`` against the options neuralengine declares: lichess-bot sends each one with
    ``setoption`` and stops when the engine does not declare it."""
    from neuralengine.uci.options import SECRET_OPTIONS, make_options

    declared = make_options(weights="")
    problems = []
    for name, value in options.items():
        where = f"engine.uci_options.{name}"
        if name == "go_commands":
            commands = value if isinstance(value, dict) else {}
            if not isinstance(value, (dict, type(None))):
                problems.append(f"{where}: must be a mapping")
            problems += [f"{where}.{key}: only {', '.join(GO_COMMANDS)} are read"
                         for key in commands if key not in GO_COMMANDS]
            continue
        if str(name).lower() in MANAGED_OPTIONS:
            problems.append(f"{where}: set by lichess-bot itself, it is dropped from the config")
            continue
        option = declared.get(str(name).lower())
        if option is None:
            problems.append(f"{where}: neuralengine has no such option")
            continue
        if option.name.lower() in SECRET_OPTIONS:
            problems.append(f"{where}: lichess-bot logs the options it sends; give the key in the environment "
                            "(NEURALENGINE_LLM_API_KEY or OPENAI_API_KEY) instead")
            continue
        try:
            option.parse(value if isinstance(value, str) else str(value).lower() if isinstance(value, bool)
                         else str(value))
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    return problems


def config_problems(config: Any) -> list[str]:
    """Everything wrong with a parsed configuration, in the file's order of sections."""
    problems = schema_problems(config)
    if isinstance(config, dict):
        problems += value_problems(config)
    return problems


def load_config(path: str | Path) -> Any:
    """The parsed YAML of ``path``. Raises :class:`ConfigError` or :class:`CannotCheck`."""
    try:
        import yaml
    except ImportError:
        raise CannotCheck("PyYAML is not installed (pip install pyyaml)") from None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None


def check_file(path: str | Path) -> tuple[int, str]:
    """The exit status and the one-line verdict for the configuration at ``path``."""
    try:
        problems = config_problems(load_config(path))
    except CannotCheck as exc:
        return EXIT_CANNOT_CHECK, f"cannot check {path}: {exc}"
    except ConfigError as exc:
        return EXIT_PROBLEMS, f"{path}: {exc}"
    if not problems:
        return 0, f"{path}: no problems found"
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    return EXIT_PROBLEMS, f"{path}: {count} that lichess-bot or Lichess would refuse or ignore: " + "; ".join(problems)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="neuralengine lichess",
        description="Tools for running neuralengine as a Lichess bot through lichess-bot.")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = sub.add_parser(
        "check", prog="neuralengine lichess check",
        help="check a lichess-bot configuration file",
        description="Check a lichess-bot configuration file: keys lichess-bot does not read, values it refuses, "
                    "limits Lichess sets for bots, and engine.uci_options against neuralengine's options. "
                    "Prints one line; exit status 0 when the file is fine, 1 when it has problems, 3 when the "
                    "check cannot run (no PyYAML).")
    check.add_argument("config", nargs="?", default=DEFAULT_CONFIG,
                       help=f"the file lichess-bot reads (default {DEFAULT_CONFIG})")
    check.add_argument("--quiet", action="store_true", help="print nothing when the file is fine")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``neuralengine lichess``."""
    args = build_parser().parse_args(argv)
    status, line = check_file(args.config)
    if status == 0:
        if not args.quiet:
            print(line)
        return 0
    print(f"neuralengine lichess check: {line}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
