"""``lichess_bot_config.yml``, the configuration check and the ``lichess/neuralengine-lichess`` launcher.

The check (:mod:`neuralengine.lichess`, ``neuralengine lichess check``) restates
what lichess-bot reads and accepts; here it runs on the shipped file, on files
with one bad setting each, and inside the launcher, which refuses to start the
engine on a bad configuration. The launcher is tested the way lichess-bot
starts it: copied into a lichess-bot folder, run from there, with no virtual
environment activated.
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

from neuralengine.cli import main as cli_main
from neuralengine.lichess import MANAGED_OPTIONS, config_problems, schema_problems, value_problems

REPO = Path(__file__).resolve().parent.parent
CONFIG_FILE = REPO / "lichess_bot_config.yml"
LAUNCHER = REPO / "lichess" / "neuralengine-lichess"

#: What a UCI engine may print on standard output (first word of each line).
UCI_OUTPUT = {"id", "uciok", "readyok", "bestmove", "copyprotection", "registration", "info", "option"}
#: Largest centipawn score the engine reports (win probability 255/256 on Lichess's curve).
ENGINE_CP_BOUND = 1505


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
    assert value_problems(load_shipped()) == []


def test_the_check_command_passes_the_shipped_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["lichess", "check", str(CONFIG_FILE)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"{CONFIG_FILE}: no problems found" and captured.err == ""
    assert cli_main(["lichess", "check", "--quiet", str(CONFIG_FILE)]) == 0
    assert capsys.readouterr().out == ""


def changed_config(change: str, value: Any) -> dict[str, Any]:
    """The shipped configuration with the setting ``change`` (dotted) set to ``value``."""
    config = copy.deepcopy(load_shipped())
    *parents, key = change.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[key] = value
    return config


BAD_SETTINGS = [
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
    # Options that neuralengine does not declare, or values it refuses: lichess-bot stops on them.
    ("engine.uci_options.Hash", 64),
    ("engine.uci_options.Threads", 0),
    ("engine.uci_options.Backend", "cuda"),
    ("engine.uci_options.MateRule", "yes"),
]


@pytest.mark.parametrize("change, value", BAD_SETTINGS)
def test_the_check_catches_bad_settings(change: str, value: Any, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Each change is one that lichess-bot refuses, ignores silently (a misspelt key) or Lichess rejects, or
    an engine option neuralengine would refuse. ``neuralengine lichess check`` exits with status 1 and one
    line on stderr that names the file and the setting."""
    config = changed_config(change, value)
    assert any(change in problem for problem in config_problems(config)), config_problems(config)
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert cli_main(["lichess", "check", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"neuralengine lichess check: {path}: "), lines
    assert change in lines[0]


def test_the_check_reports_files_it_cannot_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = {"missing.yml": None, "broken.yml": "engine: [\n", "list.yml": "- url\n", "empty.yml": ""}
    for name, text in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text, encoding="utf-8")
        assert cli_main(["lichess", "check", str(path)]) == 1, name
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and f"{path}: " in lines[0], (name, lines)


def test_matchmaking_is_off_and_would_work_when_turned_on() -> None:
    config = load_shipped()
    assert config["matchmaking"]["allow_matchmaking"] is False
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
    # PYTHONPATH stays: it is how this test run finds the package under test.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("NEURALENGINE_", "VIRTUAL_ENV", "PYTHON")) or key == "PYTHONPATH"}
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


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_launcher(folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(launcher_path(folder))], cwd=folder, env=env, input="uci\nquit\n",
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("found_as", ["python", "executable"])
def test_launcher_refuses_a_bad_configuration(bot_folder: Path, tmp_path: Path, tiny_weights: Path,
                                              engine_command: list[str], found_as: str) -> None:
    """A config.yml that lichess-bot would misread: the launcher does not start the engine; it exits with
    status 1 and one line on stderr that names the file and the setting, and writes nothing on stdout."""
    if found_as == "python":
        env = base_env(tmp_path, tiny_weights, NEURALENGINE_PYTHON=sys.executable)
    else:
        exe = engine_executable(engine_command)
        if exe is None:
            pytest.skip("the neuralengine executable is not installed")
        env = base_env(tmp_path, tiny_weights, NEURALENGINE_COMMAND=exe)
    write_config(bot_folder / "config.yml", changed_config("challenge.concurrency", 0))
    done = run_launcher(bot_folder, env)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines  # not even the "starting:" line of the verbose launcher
    assert lines[0].startswith("neuralengine lichess check: config.yml: ") and "challenge.concurrency" in lines[0]


def test_launcher_checks_the_file_named_in_the_environment(bot_folder: Path, tmp_path: Path,
                                                           tiny_weights: Path) -> None:
    """NEURALENGINE_LICHESS_CONFIG names the file lichess-bot was started with (--config); empty, it turns
    the check off."""
    write_config(bot_folder / "config.yml", changed_config("move_overhed", 1000))
    other = write_config(tmp_path / "other.yml", changed_config("engine.uci_options.Hash", 64))
    env = base_env(tmp_path, tiny_weights, NEURALENGINE_PYTHON=sys.executable, NEURALENGINE_LICHESS_CONFIG=str(other))
    done = run_launcher(bot_folder, env)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"neuralengine lichess check: {other}: ") and "Hash" in done.stderr
    assert "move_overhed" not in done.stderr
    env["NEURALENGINE_LICHESS_CONFIG"] = ""
    assert_started(uci_session([str(launcher_path(bot_folder))], bot_folder, env, GAME_START, "bestmove"),
                   f"{sys.executable} -m neuralengine")


def test_launcher_starts_the_engine_when_it_cannot_check(bot_folder: Path, tmp_path: Path,
                                                         tiny_weights: Path) -> None:
    """Without PyYAML the check cannot read the file: it says so in one line, and the engine plays."""
    shadow = tmp_path / "no-yaml"
    shadow.mkdir()
    (shadow / "yaml.py").write_text('raise ImportError("No module named yaml")\n')
    python = tmp_path / "pybin" / "python-without-yaml"
    python.parent.mkdir()
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{shadow}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    write_config(bot_folder / "config.yml", changed_config("challenge.concurrency", 0))
    env = base_env(tmp_path, tiny_weights, NEURALENGINE_PYTHON=str(python))
    result = uci_session([str(launcher_path(bot_folder))], bot_folder, env, GAME_START, "bestmove")
    notes = [line for line in result[1].splitlines() if line.startswith("neuralengine lichess check: ")]
    assert notes == ["neuralengine lichess check: cannot check config.yml: PyYAML is not installed "
                     "(pip install pyyaml)"], result[1]
    assert_plays_uci(result)


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

