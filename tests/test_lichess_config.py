"""``lichess_bot_config.yml`` and the ``lichess/neuralengine-lichess`` launcher.

lichess-bot reads its YAML, fills in defaults and refuses to start on values it
does not accept. The rules below restate, in our own words, what its
``lib/config.py`` and ``lib/model.py`` check and which keys its code reads, so
that a typo or an unsupported value in the shipped file fails here rather than
on an operator's server. The launcher is tested the way lichess-bot starts it:
copied into a lichess-bot folder, run from there, with no virtual environment
activated.
"""

from __future__ import annotations

import copy
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import chess
import chess.engine
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIG_FILE = REPO / "lichess_bot_config.yml"
LAUNCHER = REPO / "lichess" / "neuralengine-lichess"

#: Options that python-chess sets by itself; lichess-bot drops them from ``uci_options``.
MANAGED_OPTIONS = {"uci_chess960", "uci_variant", "multipv", "ponder"}
#: What a UCI engine may print on standard output (first word of each line).
UCI_OUTPUT = {"id", "uciok", "readyok", "bestmove", "copyprotection", "registration", "info", "option"}
#: Largest centipawn score the engine reports (win probability 255/256 on Lichess's curve).
ENGINE_CP_BOUND = 1505


# --------------------------------------------------------------------------
# What lichess-bot accepts
# --------------------------------------------------------------------------

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


def _type_name(expected: Any) -> str:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join("null" if kind is type(None) else kind.__name__ for kind in kinds)


def schema_problems(config: Any, schema: dict[str, Any] = SCHEMA, where: str = "") -> list[str]:
    """Keys lichess-bot does not read, and values of a type or choice it rejects."""
    if not isinstance(config, dict):
        return [f"{where or 'the file'} must be a mapping, not {config!r}"]
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
            problems += [f"{path}: {item!r} is not one of {expected.allowed}"
                         for item in values if item not in expected.allowed]
        elif isinstance(value, bool) and expected in (int, NUM, OPT_INT, NUM_LIST):
            problems.append(f"{path}: must be a number, not {value!r}")
        elif not isinstance(value, expected):
            problems.append(f"{path}: must be {_type_name(expected)}, not {value!r}")
    return problems


def _get(config: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return default if node is None else node


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def value_problems(config: dict[str, Any]) -> list[str]:
    """The cross-field rules of lichess-bot, plus Lichess's own limits for bots.

    Missing values take lichess-bot's defaults.
    """
    problems = []
    challenge = config.get("challenge") or {}
    matchmaking = config.get("matchmaking") or {}
    engine = config.get("engine") or {}

    for key in ("url", "engine", "challenge"):
        if key not in config:
            problems.append(f"required section {key} is missing")
    for key in ("dir", "name"):
        if not isinstance(engine.get(key), str):
            problems.append(f"engine.{key} is required and must be a string")

    concurrency = challenge.get("concurrency", 1)
    if not concurrency > 0:
        problems.append("challenge.concurrency must be positive or no game is ever accepted")
    reserved = challenge.get("games_reserved_for_humans", 0)
    if not 0 <= reserved <= concurrency:
        problems.append("challenge.games_reserved_for_humans must lie between 0 and challenge.concurrency")

    bounds = {"increment": (0, 180), "base": (0, float("inf")), "days": (1, float("inf")), "rating": (0, 4000)}
    for name, (low_default, high_default) in bounds.items():
        low = challenge.get(f"min_{name}", low_default)
        high = challenge.get(f"max_{name}", high_default)
        if low is None or high is None:
            continue
        if low > high:
            problems.append(f"challenge.min_{name} > challenge.max_{name}: nothing would be accepted")
    if challenge.get("max_increment", 0) > 180:
        problems.append("challenge.max_increment: Lichess allows at most 180 s of increment")
    if challenge.get("max_base", 0) > 10800:
        problems.append("challenge.max_base: Lichess allows at most 10800 s (3 hours) of base time")
    difference = challenge.get("rating_difference")
    if difference is not None and difference < 0:
        problems.append("challenge.rating_difference < 0: nothing would be accepted")

    if matchmaking.get("allow_matchmaking"):
        has_clock = bool(_as_list(matchmaking.get("challenge_initial_time"))
                         and _as_list(matchmaking.get("challenge_increment")))
        if not (has_clock or _as_list(matchmaking.get("challenge_days"))):
            problems.append("matchmaking needs challenge_initial_time and challenge_increment, or challenge_days")
    if matchmaking.get("opponent_min_rating", 600) > matchmaking.get("opponent_max_rating", 4000):
        problems.append("matchmaking.opponent_min_rating > opponent_max_rating")
    variant = matchmaking.get("challenge_variant", "random")
    if variant not in ("random", *(v for v in challenge.get("variants", []) if v != "fromPosition")):
        problems.append(f"matchmaking.challenge_variant {variant!r} is not an accepted variant we can challenge in")
    if matchmaking.get("challenge_timeout", 30) < 1:
        problems.append("matchmaking.challenge_timeout is at least one minute")

    for name in engine.get("uci_options") or {}:
        if str(name).lower() in MANAGED_OPTIONS:
            problems.append(f"engine.uci_options.{name}: set by lichess-bot itself, it is dropped from the config")
    go_commands = _get(config, "engine.uci_options.go_commands", {})
    for name in go_commands:
        if name not in ("movetime", "depth", "nodes"):
            problems.append(f"engine.uci_options.go_commands.{name}: only movetime, depth and nodes are read")
    return problems


def load_shipped() -> dict[str, Any]:
    with CONFIG_FILE.open(encoding="utf-8") as stream:
        return yaml.safe_load(stream)


# --------------------------------------------------------------------------
# The file itself
# --------------------------------------------------------------------------

def test_yaml_parses_into_a_mapping() -> None:
    config = load_shipped()
    assert isinstance(config, dict)
    assert {"url", "engine", "challenge", "matchmaking"} <= config.keys()


def test_no_token_in_the_file() -> None:
    config = load_shipped()
    assert "token" not in config, "the token comes from LICHESS_BOT_TOKEN, never from the file"
    text = CONFIG_FILE.read_text(encoding="utf-8")
    assert "lip_" not in text  # Lichess personal tokens start with lip_.
    assert "LICHESS_BOT_TOKEN" in text  # The file tells the operator where the token goes.


def test_every_key_and_value_is_accepted_by_lichess_bot() -> None:
    assert schema_problems(load_shipped()) == []


def test_cross_field_rules_of_lichess_bot_hold() -> None:
    config = load_shipped()
    config["token"] = "from-the-environment"  # What lichess-bot does with LICHESS_BOT_TOKEN.
    assert value_problems(config) == []


@pytest.mark.parametrize("change, value", [
    ("move_overhed", 1000),
    ("engine.protocol", "uic"),
    ("engine.ponder", "yes"),
    ("engine.draw_or_resign.resign_score", True),
    ("engine.draw_or_resign.resign_after", 3),
    ("engine.polyglot.selection", "best"),
    ("engine.online_moves.online_egtb.move_quality", "good"),
    ("challenge.sort_by", "fastest"),
    ("challenge.variants", ["standard", "chess9600"]),
    ("challenge.variants", "standard"),
    ("challenge.time_controls", ["ultraBullet", "blitz"]),
    ("challenge.modes", ["rated", "friendly"]),
    ("challenge.concurrency", 0),
    ("challenge.games_reserved_for_humans", 5),
    ("challenge.min_base", 20000),
    ("challenge.max_increment", 300),
    ("challenge.rating_difference", -10),
    ("pgn_file_grouping", "day"),
    ("matchmaking.challenge_filter", "always"),
    ("matchmaking.challenge_variant", "atomic"),
    ("matchmaking.rating_preference", "higher"),
    ("engine.uci_options.Ponder", True),
    ("engine.uci_options.MultiPV", 3),
    ("engine.uci_options.go_commands", {"wtime": 1000}),
])
def test_the_rules_catch_bad_settings(change: str, value: Any) -> None:
    """Each change is one that lichess-bot refuses, ignores silently (a misspelt key) or Lichess rejects."""
    config = copy.deepcopy(load_shipped())
    config["token"] = "from-the-environment"
    *parents, key = change.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[key] = value
    assert schema_problems(config) + value_problems(config)


def test_matchmaking_is_off_and_would_work_when_turned_on() -> None:
    config = load_shipped()
    assert config["matchmaking"]["allow_matchmaking"] is False
    config["token"] = "from-the-environment"
    config["matchmaking"]["allow_matchmaking"] = True
    assert value_problems(config) == []


def test_challenges_suit_a_searchless_engine() -> None:
    challenge = load_shipped()["challenge"]
    assert {"bullet", "blitz", "rapid", "classical"} <= set(challenge["time_controls"])
    assert "standard" in challenge["variants"]
    # Only variants with standard rules: the model knows nothing else.
    assert set(challenge["variants"]) <= {"standard", "chess960", "fromPosition"}
    assert set(challenge["modes"]) == {"casual", "rated"}
    assert challenge["min_increment"] <= 1 < challenge["max_increment"]
    assert challenge["concurrency"] >= 1


def test_draw_and_resign_thresholds_are_reachable_by_the_engine_score() -> None:
    rules = load_shipped()["engine"]["draw_or_resign"]
    if rules["resign_enabled"]:
        assert -ENGINE_CP_BOUND < rules["resign_score"] < 0
        assert rules["resign_moves"] >= 3
    if rules["offer_draw_enabled"]:
        assert 0 <= rules["offer_draw_score"] < 100
        assert rules["offer_draw_moves"] >= 3


def test_engine_section_points_at_the_shipped_launcher() -> None:
    engine = load_shipped()["engine"]
    assert engine["protocol"] == "uci"
    assert engine["name"] == LAUNCHER.name
    assert not os.path.isabs(engine["dir"])
    assert engine.get("interpreter") is None  # The launcher is a script that runs by itself.
    assert LAUNCHER.is_file() and os.access(LAUNCHER, os.X_OK)
    assert LAUNCHER.read_text(encoding="utf-8").startswith("#!/bin/sh\n")


# --------------------------------------------------------------------------
# The launcher, started as lichess-bot starts it
# --------------------------------------------------------------------------

@pytest.fixture
def bot_folder(tmp_path: Path) -> Path:
    """A lichess-bot folder set up as the README says: config.yml and engines/."""
    folder = tmp_path / "lichess-bot"
    engines = folder / "engines"
    engines.mkdir(parents=True)
    shutil.copy(CONFIG_FILE, folder / "config.yml")
    shutil.copy2(LAUNCHER, engines / LAUNCHER.name)
    return folder


def launcher_path(folder: Path) -> Path:
    """Where lichess-bot looks for the engine: ``dir`` and ``name``, relative to its folder."""
    engine = load_shipped()["engine"]
    return (folder / engine["dir"] / engine["name"]).resolve()


def engine_executable(engine_command: list[str]) -> str | None:
    """The ``neuralengine`` executable, or None when it only runs as ``python -m``."""
    return engine_command[0] if len(engine_command) == 1 else None


def bare_path(tmp_path: Path) -> str:
    """A PATH with the tools the launcher needs and no neuralengine nor Python."""
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    for tool in ("dirname",):
        found = shutil.which(tool)
        assert found, f"{tool} is needed on PATH"
        target = tools / tool
        if not target.exists():
            target.symlink_to(found)
    return str(tools)


def base_env(tmp_path: Path, weights: Path, **extra: str) -> dict[str, str]:
    """The environment of an operator's shell: nothing activated, only the weights named."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("NEURALENGINE_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = bare_path(tmp_path)
    env["HOME"] = str(tmp_path / "home")
    env["NEURALENGINE_WEIGHTS"] = str(weights)
    env["NEURALENGINE_LAUNCHER_VERBOSE"] = "1"  # the launcher names on stderr the command it runs
    env.update(extra)
    return env


def uci_session(command: list[str], cwd: Path, env: dict[str, str],
                lines: list[str], until: str, timeout: float = 60.0) -> tuple[list[str], str, int]:
    """Send ``lines``, read stdout until a line starts with ``until``, then quit.

    Returns (stdout lines, stderr, exit code).
    """
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.put(line.rstrip("\n"))
        out.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    assert proc.stdin is not None
    received: list[str] = []
    try:
        proc.stdin.write("".join(f"{line}\n" for line in lines))
        proc.stdin.flush()
        while True:
            line = out.get(timeout=timeout)
            if line is None:
                break
            received.append(line)
            if line.startswith(until):
                proc.stdin.write("quit\n")
                proc.stdin.flush()
                break
    except (queue.Empty, BrokenPipeError):
        pass
    finally:
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
    reader.join(timeout=5)
    while not out.empty():
        line = out.get()
        if line is not None:
            received.append(line)
    return received, stderr, proc.returncode


def assert_plays_uci(result: tuple[list[str], str, int]) -> None:
    lines, stderr, code = result
    assert any(line.startswith("bestmove ") for line in lines), f"no bestmove; stderr:\n{stderr}"
    assert code == 0, stderr
    for line in lines:
        assert line.split()[0] in UCI_OUTPUT, f"not UCI on stdout: {line!r}"
    move = chess.Move.from_uci(next(line for line in lines if line.startswith("bestmove ")).split()[1])
    assert move in chess.Board().legal_moves


GAME_START = ["uci", "isready", "ucinewgame", "position startpos", "go movetime 100"]


def assert_started(result: tuple[list[str], str, int], command: str) -> None:
    """The launcher ran ``command`` (its way of finding the engine), and the engine played."""
    _, stderr, _ = result
    started = [line for line in stderr.splitlines() if line.startswith("neuralengine-lichess: starting: ")]
    assert started == [f"neuralengine-lichess: starting: {command} uci"], stderr
    assert_plays_uci(result)


def test_launcher_finds_neuralengine_on_path(bot_folder: Path, tmp_path: Path, tiny_weights: Path,
                                             engine_command: list[str]) -> None:
    exe = engine_executable(engine_command)
    if exe is None:
        pytest.skip("the neuralengine executable is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "neuralengine").symlink_to(exe)
    env = base_env(tmp_path, tiny_weights)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    assert_started(uci_session([str(launcher_path(bot_folder))], bot_folder, env, GAME_START, "bestmove"),
                   str(bin_dir / "neuralengine"))


def test_launcher_finds_lichess_bots_own_virtualenv(bot_folder: Path, tmp_path: Path, tiny_weights: Path,
                                                    engine_command: list[str]) -> None:
    exe = engine_executable(engine_command)
    if exe is None:
        pytest.skip("the neuralengine executable is not installed")
    venv_bin = bot_folder / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "neuralengine").symlink_to(exe)
    env = base_env(tmp_path, tiny_weights)
    assert_started(uci_session([str(launcher_path(bot_folder))], bot_folder, env, GAME_START, "bestmove"),
                   "./venv/bin/neuralengine")


def test_launcher_uses_the_python_named_in_the_environment(bot_folder: Path, tmp_path: Path,
                                                           tiny_weights: Path) -> None:
    env = base_env(tmp_path, tiny_weights, NEURALENGINE_PYTHON=sys.executable)
    assert_started(uci_session([str(launcher_path(bot_folder))], bot_folder, env, GAME_START, "bestmove"),
                   f"{sys.executable} -m neuralengine")


def test_launcher_falls_back_to_python3_from_path(bot_folder: Path, tmp_path: Path, tiny_weights: Path) -> None:
    bin_dir = tmp_path / "pybin"
    bin_dir.mkdir()
    python3 = bin_dir / "python3"  # Stands for a system Python that has neuralengine installed.
    python3.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python3.chmod(0o755)
    env = base_env(tmp_path, tiny_weights)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    assert_started(uci_session([str(launcher_path(bot_folder))], bot_folder, env, GAME_START, "bestmove"),
                   "python3 -m neuralengine")


def test_launcher_override_beats_everything_else(bot_folder: Path, tmp_path: Path, tiny_weights: Path) -> None:
    broken = tmp_path / "bin" / "neuralengine"
    broken.parent.mkdir()
    broken.write_text("#!/bin/sh\necho broken\nexit 3\n")
    broken.chmod(0o755)
    env = base_env(tmp_path, tiny_weights, NEURALENGINE_PYTHON=sys.executable)
    env["PATH"] = f"{broken.parent}{os.pathsep}{env['PATH']}"
    assert_started(uci_session([str(launcher_path(bot_folder))], bot_folder, env, GAME_START, "bestmove"),
                   f"{sys.executable} -m neuralengine")


@pytest.mark.parametrize("variable, value", [
    ("NEURALENGINE_COMMAND", "does-not-exist/neuralengine"),
    ("NEURALENGINE_PYTHON", "does-not-exist/python3"),
    (None, None),
])
def test_launcher_without_an_engine_fails_clearly(bot_folder: Path, tmp_path: Path, tiny_weights: Path,
                                                  variable: str | None, value: str | None) -> None:
    env = base_env(tmp_path, tiny_weights, **({variable: value} if variable and value else {}))
    done = subprocess.run([str(launcher_path(bot_folder))], cwd=bot_folder, env=env, input="uci\nquit\n",
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 127
    assert done.stdout == ""  # lichess-bot must not mistake anything for UCI.
    assert "neuralengine" in done.stderr
    if variable:
        assert variable in done.stderr


def test_launcher_is_posix_sh(tmp_path: Path) -> None:
    shell = shutil.which("dash") or shutil.which("sh")
    if shell is None:
        pytest.skip("no sh")
    done = subprocess.run([shell, "-n", str(LAUNCHER)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------
# The engine's own options
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def declared_options(tiny_weights: Path, engine_command: list[str],
                     tmp_path_factory: pytest.TempPathFactory) -> chess.engine.UciOptionMap[chess.engine.Option]:
    """The options the real engine declares, read through the launcher."""
    folder = tmp_path_factory.mktemp("options") / "lichess-bot"
    (folder / "engines").mkdir(parents=True)
    shutil.copy2(LAUNCHER, folder / "engines" / LAUNCHER.name)
    env = dict(os.environ, NEURALENGINE_WEIGHTS=str(tiny_weights))
    exe = engine_executable(engine_command)
    env.update({"NEURALENGINE_COMMAND": exe} if exe else {"NEURALENGINE_PYTHON": sys.executable})
    engine = chess.engine.SimpleEngine.popen_uci([str(launcher_path(folder))], cwd=folder, env=env, timeout=60)
    try:
        return engine.options
    finally:
        engine.quit()


def test_every_uci_option_is_declared_by_the_engine(declared_options: Any) -> None:
    options = load_shipped()["engine"]["uci_options"]
    assert options, "the config should set the engine's options explicitly"
    for name, value in options.items():
        assert name in declared_options, f"{name!r} is not an option of neuralengine: {list(declared_options)}"
        assert name.lower() not in MANAGED_OPTIONS
        declared_options[name].parse(value)  # Raises on a wrong type or a value out of range.


def test_chess960_is_accepted_only_if_the_engine_supports_it(declared_options: Any) -> None:
    if "chess960" in load_shipped()["challenge"]["variants"]:
        assert "UCI_Chess960" in declared_options


def test_configuring_the_engine_as_lichess_bot_does(bot_folder: Path, tmp_path: Path, tiny_weights: Path) -> None:
    """``configure`` with the file's options, then one move with a score, through the launcher."""
    env = base_env(tmp_path, tiny_weights, NEURALENGINE_PYTHON=sys.executable)
    options = load_shipped()["engine"]["uci_options"]
    with chess.engine.SimpleEngine.popen_uci([str(launcher_path(bot_folder))], cwd=bot_folder, env=env,
                                             timeout=60, setpgrp=True) as engine:
        engine.configure({k: v for k, v in options.items() if k != "go_commands"})
        result = engine.play(chess.Board(), chess.engine.Limit(time=0.2), info=chess.engine.INFO_ALL)
        assert result.move in chess.Board().legal_moves
        assert "score" in result.info
        if options.get("UCI_ShowWDL"):
            assert "wdl" in result.info

