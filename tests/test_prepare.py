"""Text and .bag action values to train/test shards."""

from __future__ import annotations

import gzip
import json
import lzma
import os
import random
from pathlib import Path

import numpy as np
import pytest

from neuralengine.data.bag import BagError, BagReader, decode_action_value, encode_action_value, \
    iter_bag_positions, write_bag
from neuralengine.data.prepare import convert_text, main
from neuralengine.data.shards import Shard, open_shards
from neuralengine.data.text import is_test_game, iter_games, parse_line, position_key
from neuralengine.encoding import MOVE_TO_ACTION, tokenize

DATA = Path(__file__).parent / "data" / "av"
SAMPLES = [DATA / "d7_s101-000-head.txt.xz", DATA / "d7_s202-000-head.txt.xz"]


def sample_lines() -> list[str]:
    lines = []
    for path in SAMPLES:
        with lzma.open(path, "rt") as fh:
            lines.extend(line for line in fh if line.strip())
    return lines


def key_of(tokens: np.ndarray) -> bytes:
    """Tokens without the move counters: one per distinct position."""
    return bytes(np.asarray(tokens[:71]))


def load(folder: Path, split: str) -> list[Shard]:
    return sorted((s for s in open_shards([folder]) if s.path.name.startswith(split)), key=lambda s: s.path.name)


def test_splits_share_no_game_and_no_position(tmp_path):
    out = tmp_path / "shards"
    assert main([*map(str, SAMPLES), "--out", str(out), "--test-fraction", "0.3", "--shard-size", "250",
                 "--engine", "Stockfish 15.1", "--depth", "7", "--quiet"]) == 0
    train, test = load(out, "train"), load(out, "test")
    assert len(train) > 1 and all(len(s) <= 250 for s in train)
    keys = {split: [key_of(b) for s in shards for b in s.boards] for split, shards in (("train", train),
                                                                                      ("test", test))}
    for split in keys:
        assert len(keys[split]) == len(set(keys[split])), f"duplicates in {split}"
    assert not set(keys["train"]) & set(keys["test"])
    games = {split: {int(g) for s in shards for g in s.game_ids} for split, shards in (("train", train),
                                                                                     ("test", test))}
    assert games["test"] and not games["train"] & games["test"]
    # Every distinct position of the sample is somewhere, with its moves and Lichess win probabilities.
    expected = {}
    for line in sample_lines():
        fen, moves, probs = parse_line(line)
        expected.setdefault(key_of(tokenize(fen)), (moves, probs))
    got = {}
    for shard in train + test:
        for i in range(len(shard)):
            pos = shard[i]
            got[key_of(pos.board)] = pos
    # The test games' distinct positions that a training game also has were dropped, and counted.
    split_keys: dict[bool, set[str]] = {True: set(), False: set()}
    for game_key, lines in iter_games(SAMPLES):
        split_keys[is_test_game(game_key, 0.3)].update(" ".join(fen.split()[:4]) for fen, _, _ in lines)
    overlap = len(split_keys[True] & split_keys[False])
    assert overlap > 0
    assert json.loads((out / "prepare.json").read_text())["test_overlap_dropped"] == overlap
    assert sum(len(s) for s in test) == len(split_keys[True]) - overlap
    assert len(got) == len(expected)
    for key, (moves, probs) in expected.items():
        pos = got[key]
        assert pos.actions.tolist() == [MOVE_TO_ACTION[m] for m in moves]
        np.testing.assert_allclose(pos.win_probs, probs, rtol=0, atol=1e-7)
    assert train[0].metadata["engine"] == "Stockfish 15.1" and train[0].metadata["limit"] == {"depth": 7}
    assert [s["file"] for s in train[0].metadata["sources"]] == [p.name for p in SAMPLES]


def test_test_positions_seen_in_training_are_dropped_and_counted(tmp_path):
    """An input given with --test holds one whole training game and one game of its own: every position of
    the shared game, and those of the other game that training also has, leave the test split, and
    ``test_overlap_dropped`` counts exactly those."""
    games = [lines for _, lines in iter_games(SAMPLES)][:3]
    raw = sample_lines()
    # The sample lines of each game, in order (games follow each other in the files).
    sizes = [len(g) for g in games]
    chunks = [raw[sum(sizes[:i]) : sum(sizes[: i + 1])] for i in range(3)]
    (tmp_path / "train.txt").write_text("".join(chunks[0] + chunks[1]))
    (tmp_path / "test.txt").write_text("".join(chunks[1] + chunks[2]))

    def keys(*numbers: int) -> set[str]:
        return {" ".join(fen.split()[:4]) for n in numbers for fen, _, _ in games[n]}

    # The own game repeats training positions (the start at least) that the test split already has from the
    # shared game: each distinct position is dropped, and counted, once.
    assert keys(2) & keys(0, 1)
    shared = keys(1, 2) & keys(0, 1)
    out = tmp_path / "shards"
    assert main([str(tmp_path / "train.txt"), "--test", str(tmp_path / "test.txt"), "--out", str(out),
                 "--test-fraction", "0", "--quiet"]) == 0
    summary = json.loads((out / "prepare.json").read_text())
    assert summary["test_overlap_dropped"] == len(shared)
    assert summary["test"] == len(keys(1, 2) - shared) == len(keys(2) - keys(0, 1))
    test_keys = {key_of(b) for s in load(out, "test") for b in s.boards}
    assert test_keys == {key_of(tokenize(fen)) for fen, _, _ in games[2]
                         if " ".join(fen.split()[:4]) not in keys(0, 1)}


def write_annotated(folder: Path, name: str, lines: list[str], games: list[list], split: str | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / f"{name}.txt.gz", "wt") as fh:
        fh.writelines(lines)
    meta = {"format": "neuralengine-action-values-text", "engine": "Stockfish 15.1", "limit": {"nodes": 5000},
            "source": f"{split or 'lichess'}.fen", "split": split, "games": games}
    (folder / f"{name}.json").write_text(json.dumps(meta))


def test_annotated_shards_keep_their_split_and_games(tmp_path):
    lines = sample_lines()
    games = [(key, len(g)) for key, g in iter_games(SAMPLES)]
    n0, n1 = games[0][1], games[1][1]
    folder = tmp_path / "annotated"
    write_annotated(folder, "test-00000", lines[:n0], [["sp1-000000", n0]], "test")
    write_annotated(folder, "train-00000", lines[n0 : n0 + n1], [["sp1-000001", n1 - 10], ["sp1-000002", 10]],
                    "train")
    out = tmp_path / "shards"
    assert main([str(folder), "--out", str(out), "--test-fraction", "0", "--quiet"]) == 0
    train, test = load(out, "train"), load(out, "test")
    assert set(test[0].game_ids.tolist()) == {0}
    assert set(train[0].game_ids.tolist()) == {1, 2}
    assert train[0].game_ids.tolist().count(2) == 10
    assert test[0].metadata["limit"] == {"nodes": 5000}
    assert test[0].metadata["sources"][0]["origin"] == "test.fen"
    # Without a split in the sidecar, the game ids decide (all to test here).
    write_annotated(tmp_path / "nosplit", "lichess-00000", lines[:n0], [["lichess.pgn#7", n0]], None)
    assert main([str(tmp_path / "nosplit"), "--out", str(tmp_path / "s2"), "--test-fraction", "1", "--quiet"]) == 0
    assert not load(tmp_path / "s2", "train") and len(load(tmp_path / "s2", "test")[0]) > 0
    # A sidecar that does not match its text is an error, not a silent mix-up.
    write_annotated(tmp_path / "bad", "x-00000", lines[:5], [["g", 6]], "train")
    assert main([str(tmp_path / "bad"), "--out", str(tmp_path / "s3"), "--quiet"]) == 1


def sample_records(rng: random.Random) -> tuple[list[bytes], dict[str, dict[str, float]]]:
    expected: dict[str, dict[str, float]] = {}
    for line in sample_lines():
        fen, moves, probs = parse_line(line)
        expected.setdefault(fen, dict(zip(moves, probs.astype(np.float64).tolist())))
    records = [encode_action_value(fen, m, p) for fen, mp in expected.items() for m, p in mp.items()]
    rng.shuffle(records)
    return records, expected


def test_bag_container_and_records(tmp_path):
    record = encode_action_value("8/8/8/8/8/8/8/K6k w - - 0 1", "a1a2", 0.25)
    # Beam layout: varint length + UTF-8, twice, then a big-endian double.
    assert record[0] == 27 and record[28] == 4 and record[-8:] == bytes.fromhex("3fd0000000000000")
    assert decode_action_value(record) == ("8/8/8/8/8/8/8/K6k w - - 0 1", "a1a2", 0.25)
    long_fen = "x" * 200
    assert decode_action_value(encode_action_value(long_fen, "e2e4", 1.0))[0] == long_fen
    with pytest.raises(BagError):
        decode_action_value(record[:-1])
    path = write_bag(tmp_path / "a.bag", [record, b"", record * 2])
    raw = path.read_bytes()
    ends = np.frombuffer(raw[-8 - 24 : -8], dtype="<i8").tolist()
    assert ends == [len(record), len(record), 3 * len(record)]
    assert int.from_bytes(raw[-8:], "little") == 3 * len(record)
    reader = BagReader(path)
    assert len(reader) == 3 and reader[0] == record and reader[1] == b"" and reader[-1] == record * 2
    assert list(reader) == [record, b"", record * 2]
    (tmp_path / "short.bag").write_bytes(b"abc")
    with pytest.raises(BagError, match="too short"):
        BagReader(tmp_path / "short.bag")
    (tmp_path / "bad.bag").write_bytes(raw[:-8] + (10**9).to_bytes(8, "little"))
    with pytest.raises(BagError, match="not a bag"):
        BagReader(tmp_path / "bad.bag")


def test_bag_files_become_shards(tmp_path):
    records, expected = sample_records(random.Random(1))
    # Bad records are skipped and counted, never fatal.
    junk = [b"\xff\xff", encode_action_value("8/8/8/8/8/8/8/K6k w - - 0 1", "a1a9", 0.5),
            encode_action_value("8/8/8/8/8/8/8/K6k w - - 0 1", "a1a2", 1.5)]
    bag = write_bag(tmp_path / "action_value_data.bag", records + junk)
    skipped: dict[str, int] = {}
    grouped = {fen: dict(zip(moves, probs.tolist())) for fen, moves, probs in iter_bag_positions(bag, skipped)}
    assert skipped == {"undecodable record": 1, "unknown move": 1, "win probability out of range": 1}
    assert grouped.keys() == expected.keys()
    for fen, mp in expected.items():
        assert grouped[fen].keys() == mp.keys()
        assert all(abs(grouped[fen][m] - p) < 1e-7 for m, p in mp.items())

    out = tmp_path / "shards"
    assert main(["--test", str(bag), "--out", str(out), "--quiet", str(SAMPLES[0])]) == 0
    summary = json.loads((out / "prepare.json").read_text())
    assert summary["skipped"] == skipped
    test = load(out, "test")
    assert test and all(s.metadata["split"] == "test" for s in test)
    # The bag's positions that are also in the training text were dropped from test.
    assert summary["test_overlap_dropped"] > 0
    distinct = {position_key(fen) for fen in expected}
    assert summary["test"] == len(distinct) - summary["test_overlap_dropped"]

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.bag").write_bytes(b"\x00" * 7)
    assert main([str(tmp_path / "broken"), "--out", str(tmp_path / "s"), "--quiet"]) == 1


def test_clear_errors_and_force(tmp_path, capsys):
    out = tmp_path / "shards"
    assert main([str(tmp_path / "missing.txt"), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main([str(SAMPLES[0]), "--out", str(out), "--quiet"]) == 0
    assert main([str(SAMPLES[0]), "--out", str(out), "--quiet"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main([str(SAMPLES[0]), "--out", str(out), "--quiet", "--force", "--shard-size", "100"]) == 0
    assert len(list(out.glob("train-*.neav"))) > 1
    bad = tmp_path / "bad.txt"
    bad.write_text("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1\te2e4=35\n")
    assert main([str(bad), "--out", str(tmp_path / "s2"), "--quiet"]) == 1
    assert "malformed" in capsys.readouterr().err
    assert main([str(SAMPLES[0]), "--out", str(out), "--test-fraction", "1.5"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0


def test_puzzle_positions_never_enter_the_shards(tmp_path: Path):
    """A puzzle made of three consecutive positions of a real game (its FEN
    and the positions after its two moves) removes exactly those three."""
    import chess

    lines = sample_lines()
    fens = [line.split("\t")[0] for line in lines[40:43]]
    board = chess.Board(fens[0])
    moves = []
    for nxt in fens[1:]:
        for move in board.legal_moves:
            trial = board.copy(stack=False)
            trial.push(move)
            if position_key(trial.fen()) == position_key(nxt):
                break
        moves.append(move.uci())
        board.push(move)
    csv_path = tmp_path / "puzzles.csv"
    csv_path.write_text("PuzzleId,FEN,Moves,Rating,RatingDeviation,Popularity,NbPlays,Themes,GameUrl,OpeningTags\n"
                        f"p1,{fens[0]},{' '.join(moves)},1500,80,90,100,short,,\n"
                        "p2,not a fen,e2e4,1500,80,90,100,short,,\n")
    keys = {position_key(f) for f in fens}
    out_plain, out_clean = tmp_path / "plain", tmp_path / "clean"
    assert main([str(p) for p in SAMPLES] + ["--out", str(out_plain), "--quiet"]) == 0
    assert main([str(p) for p in SAMPLES] + ["--out", str(out_clean), "--quiet",
                                             "--exclude-puzzles", str(csv_path)]) == 0

    def keys_in(folder: Path) -> set[str]:
        found = set()
        for shard in open_shards([folder]):
            for row in np.asarray(shard.boards):
                found.add(row.tobytes())
        return found

    wanted = {tokenize(f).tobytes() for f in fens}
    assert wanted <= keys_in(out_plain)
    assert not wanted & keys_in(out_clean)
    plain = json.loads((out_plain / "prepare.json").read_text())
    clean = json.loads((out_clean / "prepare.json").read_text())
    assert clean["skipped"]["excluded position"] == 3
    assert plain["train"] + plain["test"] - (clean["train"] + clean["test"]) == len(keys)


# -- replacing a set of shards -----------------------------------------------------


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_failed_force_run_leaves_the_old_shards_whole(tmp_path, capsys):
    """--force replaces the old shards only at the end: an input that fails half-way (after new
    shards were written) leaves the old set untouched, and no partial folder behind."""
    out = tmp_path / "shards"
    assert main([str(SAMPLES[0]), "--out", str(out), "--quiet", "--shard-size", "300"]) == 0
    before = _files(out)
    assert len([n for n in before if n.startswith("train-")]) > 1
    bad = tmp_path / "late-error.txt"
    bad.write_text(lzma.open(SAMPLES[1], "rt").read() + "not an action-value line\n")
    assert main([str(SAMPLES[1]), str(bad), "--out", str(out), "--quiet", "--force", "--shard-size", "50"]) == 1
    assert "malformed" in capsys.readouterr().err
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late-error.txt", "shards"]
    # A run that succeeds replaces the whole set, with nothing of the old one left.
    assert main([str(SAMPLES[1]), "--out", str(out), "--quiet", "--force", "--shard-size", "100000"]) == 0
    assert {"prepare.json", "train-0000.neav"} <= _files(out).keys() <= {"prepare.json", "test-0000.neav",
                                                                         "train-0000.neav"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late-error.txt", "shards"]


def test_convert_text_replaces_an_older_set(tmp_path):
    out = tmp_path / "shards"
    convert_text([SAMPLES[0]], out, test_fraction=0.5, shard_size=40, progress=False)
    assert len(list(out.glob("train-*.neav"))) > 1 and len(list(out.glob("test-*.neav"))) > 1
    stats = convert_text([SAMPLES[0]], out, test_fraction=0.5, shard_size=100_000, progress=False)
    assert [p.name for p in sorted(out.glob("*.neav"))] == ["test-0000.neav", "train-0000.neav"]
    assert sum(len(s) for s in open_shards([out])) == stats["train"] + stats["test"]


def test_other_files_in_out_stay(tmp_path):
    """Inputs inside --out, and the user's own files there, survive a --force run."""
    out = tmp_path / "data"
    out.mkdir()
    text = out / "games.txt"
    text.write_text(lzma.open(SAMPLES[0], "rt").read())
    (out / "notes.md").write_text("mine")
    assert main([str(text), "--out", str(out), "--quiet", "--shard-size", "200"]) == 0
    first = _files(out)
    assert {"games.txt", "notes.md", "prepare.json", "train-0000.neav"} <= first.keys()
    assert main([str(text), "--out", str(out), "--quiet", "--force", "--shard-size", "100000"]) == 0
    second = _files(out)
    assert second["games.txt"] == first["games.txt"] and second["notes.md"] == b"mine"
    assert sorted(n for n in first if n.endswith(".neav")) == ["train-0000.neav", "train-0001.neav"]
    assert sorted(n for n in second if n.endswith(".neav")) == ["train-0000.neav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_what_a_killed_run_left_is_removed(tmp_path):
    """The half-written folder of a killed run (a dead pid in its name) goes at the next run;
    that of a run still going stays."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = tmp_path / f".shards.{child.pid}.abc123.tmp"
    alive = tmp_path / f".shards.{os.getpid()}.def456.tmp"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "train-0000.neav").write_bytes(b"half")
    assert main([str(SAMPLES[0]), "--out", str(tmp_path / "shards"), "--quiet"]) == 0
    assert not dead.exists() and alive.is_dir()


# -- too little data for a test split -----------------------------------------------------


def test_no_test_positions_is_said_clearly(tmp_path, capsys):
    lines = sample_lines()[:30]  # one game
    small = tmp_path / "small.txt"
    small.write_text("".join(lines))
    out = tmp_path / "shards"
    assert main([str(small), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: 0 test positions" in err and "1 games are too few for --test-fraction 0.02" in err
    assert "--test-fraction 0" in err and "--test" in err
    summary = json.loads((out / "prepare.json").read_text())
    assert summary["test"] == 0 and summary["warnings"] and "0 test positions" in summary["warnings"][0]
    # Test data that all occurs in training: also said.
    assert main([str(small), "--test", str(small), "--out", str(out), "--quiet", "--force"]) == 0
    assert "also occur in training" in capsys.readouterr().err
    # Asking for no test split is not warned about.
    assert main([str(small), "--out", str(out), "--quiet", "--force", "--test-fraction", "0"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert json.loads((out / "prepare.json").read_text())["warnings"] == []


# -- memory ---------------------------------------------------------------------------------


def _synthetic_games(path: Path, count: int) -> None:
    """``count`` (up to 61,504) two-line games: the start position, then a position of its own (two
    pieces, one in each half of the board, placed by the game's number; shards need no legality)."""
    pieces = "QRBNqrbn"
    start = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1\te2e4:20 d2d4:18\n"
    with open(path, "w") as fh:
        for game in range(count):
            board = ["."] * 64
            board[0], board[63] = "K", "k"
            rest, low = divmod(game, 31 * 8)
            high = rest % (31 * 8)
            board[1 + low // 8], board[32 + high // 8] = pieces[low % 8], pieces[high % 8]
            rows = []
            for r in range(8):
                row = "".join(board[8 * r : 8 * r + 8])
                for length in range(8, 0, -1):
                    row = row.replace("." * length, str(length))
                rows.append(row)
            fh.write(start + f"{'/'.join(rows)} w - - 0 1\ta1a2:5\n")


@pytest.mark.slow
def test_memory_does_not_grow_with_the_positions_kept(tmp_path):
    """prepare's peak memory over 6,000 games exceeds that over 2,000 by well under 100 bytes a
    position: positions are remembered as digests, test positions wait on disk. (Holding FEN
    strings and the test positions in memory took about 340.)"""
    import tracemalloc

    from neuralengine.data.prepare import Source, prepare

    peaks = {}
    for count in (2000, 6000):
        text = tmp_path / f"games-{count}.txt"
        _synthetic_games(text, count)
        tracemalloc.start()
        stats = prepare([Source(text, "text")], tmp_path / f"out-{count}", test_fraction=0.5, shard_size=1000,
                        progress=False)
        peaks[count] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert stats.train + stats.test == count + 1 and stats.test > count // 3
    per_position = (peaks[6000] - peaks[2000]) / 4000
    assert per_position < 100, f"{per_position:.0f} bytes a position"


def test_digest_set_is_a_set_of_16_to_32_bytes_an_entry():
    from neuralengine.data.digests import DigestSet, digest

    rng = random.Random(7)
    values = [rng.getrandbits(64) for _ in range(5000)] + [0, 1, 2**64 - 1]
    values += values[:300]  # repeats
    kept, expected = DigestSet(capacity=16), set()
    for value in values:
        assert kept.add(value) == ((value or 1) not in expected)
        expected.add(value or 1)
    assert len(kept) == len(expected) and all(v in kept for v in values)
    assert not any(rng.getrandbits(64) in kept for _ in range(2000))
    assert 16 * len(kept) <= kept.nbytes <= 32 * len(kept)
    assert digest("8/8/8/8/8/8/8/K6k w - -") == digest("8/8/8/8/8/8/8/K6k w - -") != digest("8/8/8/8/8/8/8/K6k b - -")
