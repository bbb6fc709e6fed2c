"""Action-value shards and the conversion of the text format, on real data."""

from __future__ import annotations

import lzma
import subprocess
import sys
from pathlib import Path

import chess
import numpy as np
import pytest

from neuralengine.data.shards import Position, Shard, ShardError, open_shards, write_shard
from neuralengine.data.prepare import convert_text
from neuralengine.data.text import FormatError, parse_line, score_to_win_prob
from neuralengine.encoding import ACTIONS, legal_actions, tokenize

SAMPLE = [("d7_s101-000.txt.xz", 1500), ("d7_s202-001.txt.xz", 1200)]


def real_positions(count: int = 40) -> list[Position]:
    """Positions of a fixed game with made-up but distinct win probabilities."""
    board = chess.Board()
    out = []
    for i in range(count):
        moves, actions = legal_actions(board)
        if not moves:
            break
        probs = np.linspace(0.0, 1.0, len(actions), dtype=np.float32)
        out.append(Position(tokenize(board.fen()), actions, probs, game_id=i // 10))
        board.push(moves[(7 * i) % len(moves)])
    return out


# --------------------------------------------------------------------------
# Shard files
# --------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    positions = real_positions()
    path = write_shard(tmp_path / "a.neav", positions, {"engine": "stockfish", "depth": 7})
    assert not list(tmp_path.glob("*.tmp"))
    shard = Shard(path)
    assert len(shard) == len(positions)
    assert shard.num_actions == sum(len(p.actions) for p in positions)
    assert shard.metadata == {"engine": "stockfish", "depth": 7}
    assert shard.boards.dtype == np.uint8 and shard.boards.shape == (len(positions), 77)
    assert shard.actions.dtype == np.int16 and shard.win_probs.dtype == np.float32
    for i, want in enumerate(positions):
        got = shard[i]
        np.testing.assert_array_equal(got.board, want.board)
        np.testing.assert_array_equal(got.actions, want.actions)
        np.testing.assert_array_equal(got.win_probs, want.win_probs)
        assert got.game_id == want.game_id
    np.testing.assert_array_equal(shard.offsets, np.concatenate([[0], np.cumsum([len(p.actions) for p in positions])]))
    with pytest.raises(ValueError):
        shard.boards[0, 0] = 1  # memory-mapped read-only


def test_empty_shard(tmp_path: Path) -> None:
    shard = Shard(write_shard(tmp_path / "empty.neav", []))
    assert len(shard) == 0 and shard.num_actions == 0
    assert shard.boards.shape == (0, 77) and shard.offsets.tolist() == [0]


def test_truncated_shard(tmp_path: Path) -> None:
    path = write_shard(tmp_path / "a.neav", real_positions())
    data = path.read_bytes()
    path.write_bytes(data[:-64])
    with pytest.raises(ShardError, match="truncated"):
        Shard(path)
    path.write_bytes(data[:40])  # cut inside the JSON header
    with pytest.raises(ShardError, match="truncated"):
        Shard(path)


@pytest.mark.parametrize(("content", "words"), [
    (b"", "not an action-value shard"),
    (b"NEAV", "not an action-value shard"),
    (b"PK\x03\x04" + bytes(100), "not an action-value shard"),
    (b"NEAV" + (9).to_bytes(4, "little") + (2).to_bytes(8, "little") + b"{}", "shard version 9"),
    (b"NEAV" + (1).to_bytes(4, "little") + (2).to_bytes(8, "little") + b"{}", "corrupt header"),
    (b"NEAV" + (1).to_bytes(4, "little") + (2).to_bytes(8, "little") + b"[]", "corrupt header"),
    (b"NEAV" + (1).to_bytes(4, "little") + (1000).to_bytes(8, "little") + b"{}", "truncated"),
])
def test_files_that_are_not_shards(content: bytes, words: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.neav"
    path.write_bytes(content)
    with pytest.raises(ShardError, match=words):
        Shard(path)


def test_missing_shard_file(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="cannot read shard"):
        Shard(tmp_path / "nope.neav")


def test_open_shards_expands_folders(tmp_path: Path) -> None:
    write_shard(tmp_path / "b.neav", real_positions(5))
    write_shard(tmp_path / "a.neav", real_positions(3))
    (tmp_path / "notes.txt").write_text("not a shard")
    shards = open_shards([tmp_path])
    assert [s.path.name for s in shards] == ["a.neav", "b.neav"]
    assert [len(s) for s in shards] == [3, 5]
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ShardError, match="no shards found"):
        open_shards([tmp_path / "empty_dir"])
    with pytest.raises(ShardError, match="cannot read shard"):
        open_shards([tmp_path / "missing.neav"])


# --------------------------------------------------------------------------
# Text format
# --------------------------------------------------------------------------


def test_scores_to_win_probabilities() -> None:
    assert score_to_win_prob("0") == 0.5
    assert score_to_win_prob("100") == pytest.approx(0.591, abs=5e-4)
    assert score_to_win_prob("-300") == pytest.approx(0.249, abs=5e-4)
    assert score_to_win_prob("#3") == 1.0 and score_to_win_prob("#1") == 1.0
    assert score_to_win_prob("#-2") == 0.0


def test_parse_line() -> None:
    fen, moves, probs = parse_line(f"{chess.STARTING_FEN}\te2e4:32 g1h3:-53 a2a3:#-4\n")
    assert fen == chess.STARTING_FEN and moves == ["e2e4", "g1h3", "a2a3"]
    np.testing.assert_allclose(probs, [1 / (1 + np.exp(-0.00368208 * 32)), 1 / (1 + np.exp(0.00368208 * 53)), 0.0],
                               rtol=1e-6)
    for bad in ("no tab here", f"{chess.STARTING_FEN}\te2e4", f"{chess.STARTING_FEN}\te2e4:abc"):
        with pytest.raises(FormatError, match="malformed"):
            parse_line(bad)


@pytest.fixture(scope="module")
def sample_files(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The first lines of two real files, one written plain, one xz-compressed."""
    folder = tmp_path_factory.mktemp("text")
    out = []
    for i, (name, count) in enumerate(SAMPLE):
        with lzma.open(shared_data / "av" / name, "rt", encoding="utf-8") as fh:
            lines = [next(fh) for _ in range(count)]
        if i == 0:
            path = folder / name.replace(".xz", "")
            path.write_text("".join(lines), encoding="utf-8")
        else:
            path = folder / name
            with lzma.open(path, "wt", encoding="utf-8") as fh:
                fh.write("".join(lines))
        out.append(path)
    return out


def _games(paths: list[Path]) -> list[list[tuple[str, list[str], list[str]]]]:
    """Games read independently of the converter: (fen, moves, score strings)."""
    games: list[list[tuple[str, list[str], list[str]]]] = []
    for path in paths:
        opener = lzma.open if path.suffix == ".xz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            first = True
            for line in fh:
                fen, rest = line.rstrip("\n").split("\t")
                pairs = [item.rsplit(":", 1) for item in rest.split()]
                if first or fen == chess.STARTING_FEN:
                    games.append([])
                    first = False
                games[-1].append((fen, [m for m, _ in pairs], [s for _, s in pairs]))
    return games


def _key(fen: str) -> str:
    return " ".join(fen.split()[:4])


@pytest.mark.slow
def test_convert_real_text(sample_files: list[Path], tmp_path: Path) -> None:
    stats = convert_text(sample_files, tmp_path, test_fraction=0.5, shard_size=400, metadata={"depth": 7},
                         progress=False)
    games = _games(sample_files)
    assert stats["games"] == len(games) > 10
    assert stats["lines"] == sum(len(g) for g in games) == sum(n for _, n in SAMPLE)

    splits = {name: open_shards(sorted(tmp_path.glob(f"{name}-*.neav"))) for name in ("train", "test")}
    assert len(splits["train"]) >= 2  # shard_size splits the output
    for name, shards in splits.items():
        for shard in shards:
            assert shard.metadata["split"] == name and shard.metadata["limit"] == {"depth": 7}
            assert [s["file"] for s in shard.metadata["sources"]] == [p.name for p in sample_files]
            assert len(shard) <= 400
    assert stats["train"] == sum(len(s) for s in splits["train"]) > 0
    assert stats["test"] == sum(len(s) for s in splits["test"]) > 0

    # Games go wholly to one split.
    game_split: dict[int, str] = {}
    for name, shards in splits.items():
        for shard in shards:
            for gid in np.unique(shard.game_ids):
                assert game_split.setdefault(int(gid), name) == name
    # Every game with a new position is somewhere; game ids index the games in file order.
    assert set(game_split) <= set(range(len(games)))

    # What each split should hold: the first occurrence of every position of its games,
    # de-duplicated by FEN without move counters, and no test position seen in training.
    expected: dict[str, dict[str, tuple[str, list[str], list[str]]]] = {"train": {}, "test": {}}
    for gid, game in enumerate(games):
        name = game_split.get(gid)
        for fen, moves, scores in game:
            if name is not None:
                expected[name].setdefault(_key(fen), (fen, moves, scores))
    for key in set(expected["train"]) & set(expected["test"]):
        del expected["test"][key]

    mates = 0
    for name, shards in splits.items():
        seen: set[bytes] = set()
        for shard in shards:
            for i in range(len(shard)):
                pos = shard[i]
                # Tokens 0..70 are the FEN without its counters.
                key_tokens = pos.board[:71].tobytes()
                assert key_tokens not in seen
                seen.add(key_tokens)
        assert len(seen) == len(expected[name])
        by_tokens = {tokenize(fen)[:71].tobytes(): (fen, moves, scores) for fen, moves, scores in expected[name].values()}
        assert set(by_tokens) == seen
        for shard in shards:
            for i in range(len(shard)):
                pos = shard[i]
                fen, moves, scores = by_tokens[pos.board[:71].tobytes()]
                np.testing.assert_array_equal(pos.board, tokenize(fen))
                assert [ACTIONS[a] for a in pos.actions] == moves
                assert set(moves) == {m.uci() for m in chess.Board(fen).legal_moves}
                for prob, score in zip(pos.win_probs, scores):
                    if score.startswith("#"):
                        mates += 1
                        assert prob == (0.0 if score.startswith("#-") else 1.0)
                    else:
                        assert prob == pytest.approx(1 / (1 + np.exp(-0.00368208 * int(score))), abs=1e-6)
                        assert prob == np.float32(score_to_win_prob(score))
    assert mates > 10
    # The two splits share no position.
    train_keys = {p.board[:71].tobytes() for s in splits["train"] for p in (s[i] for i in range(len(s)))}
    test_keys = {p.board[:71].tobytes() for s in splits["test"] for p in (s[i] for i in range(len(s)))}
    assert not train_keys & test_keys
    assert stats["duplicates"] > 0  # openings repeat across games
    assert stats["duplicates"] + stats["train"] + stats["test"] + stats["test_overlap_dropped"] == stats["lines"]


def test_convert_is_deterministic(sample_files: list[Path], tmp_path: Path) -> None:
    """Two conversions of the same input write the same files, byte for byte: several training shards and
    a test shard (the sample's games at --test-fraction 0.3 give both splits)."""
    a = convert_text(sample_files[:1], tmp_path / "a", test_fraction=0.3, shard_size=500, progress=False)
    b = convert_text(sample_files[:1], tmp_path / "b", test_fraction=0.3, shard_size=500, progress=False)
    assert a == b
    assert a["train"] > 1000 and a["test"] > 0
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert {"train-0000.neav", "train-0001.neav", "train-0002.neav", "test-0000.neav", "prepare.json"} <= set(names)
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_convert_reports_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(f"{chess.STARTING_FEN}\te2e4:32\nthis is not a line\n", encoding="utf-8")
    with pytest.raises(FormatError, match="malformed"):
        convert_text([path], tmp_path / "out", progress=False)


def test_stacked_rows_read_like_one_concatenated_array(tmp_path):
    from neuralengine.data.shards import StackedRows

    rng = np.random.default_rng(5)
    parts = [rng.integers(0, 30, (n, 77)).astype(np.uint8) for n in (5, 1, 9)]
    paths = []
    for k, part in enumerate(parts):  # memory-mapped, as shards are
        path = tmp_path / f"p{k}.npy"
        np.save(path, part)
        paths.append(np.load(path, mmap_mode="r"))
    whole = np.concatenate(parts)
    rows = StackedRows(paths)
    assert len(rows) == 15 and rows.shape == (15, 77) and rows.dtype == np.uint8
    index = rng.integers(0, 15, (4, 6))
    assert np.array_equal(rows[index], whole[index])            # any shape of index
    assert np.array_equal(rows[3:11], whole[3:11])              # slices cross the parts
    assert np.array_equal(rows[np.int64(6):np.int64(7)], whole[6:7])
    wide = StackedRows([p[:, 0] for p in parts], dtype=np.int64)
    assert wide[np.arange(15)].dtype == np.int64 and np.array_equal(wide[np.arange(15)], whole[:, 0])
    short = StackedRows(paths, length=10)
    assert len(short) == 10 and np.array_equal(short[:], whole[:10])
    with pytest.raises(IndexError):
        short[np.array([10])]
    with pytest.raises(TypeError):
        rows[np.array([0.5])]


# --------------------------------------------------------------------------
# Many shards and the limit on open files
# --------------------------------------------------------------------------

_OPEN_ALL = """
import resource, sys
from neuralengine.data.shards import ShardError, open_shards
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), int(sys.argv[3])))
try:
    shards = open_shards([sys.argv[1]])
except ShardError as exc:
    print(exc)
    sys.exit(3)
rows = sum(int(s.boards[0, 0]) + len(s.actions) for s in shards)  # every mapping is read
print(len(shards), resource.getrlimit(resource.RLIMIT_NOFILE)[0], rows)
"""


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 one-position shards (copies of one file: they need not differ)."""
    folder = tmp_path_factory.mktemp("many")
    raw = write_shard(folder / "train-0000.neav", real_positions(1)).read_bytes()
    for i in range(1, 300):
        (folder / f"train-{i:04d}.neav").write_bytes(raw)
    return folder


def _open_all(folder: Path, soft: int, hard: int) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("resource")
    return subprocess.run([sys.executable, "-c", _OPEN_ALL, str(folder), str(soft), str(hard)],
                          capture_output=True, text=True, timeout=120)


def test_each_shard_holds_at_most_one_file_open(many_shards: Path) -> None:
    """300 shards of five arrays fit a limit of 400 open files (one mapping per shard, not per array)."""
    done = _open_all(many_shards, 400, 400)
    assert done.returncode == 0, done.stderr[-2000:]
    count, _, rows = done.stdout.split()
    assert int(count) == 300 and int(rows) == 300 * (int(real_positions(1)[0].board[0]) + 20)


def test_a_low_soft_limit_on_open_files_is_raised(many_shards: Path) -> None:
    done = _open_all(many_shards, 64, 1024)
    assert done.returncode == 0, done.stderr[-2000:]
    count, soft, _ = done.stdout.split()
    assert int(count) == 300 and int(soft) == 1024


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="Python 3.13 maps files without keeping them open")
def test_too_many_shards_for_the_hard_limit_is_a_clear_error(many_shards: Path) -> None:
    done = _open_all(many_shards, 64, 64)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "limit of 64 open files" in done.stdout and "ulimit -n" in done.stdout and "--shard-size" in done.stdout
