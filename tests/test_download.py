"""``neuralengine download``: against a local HTTP server, never the internet.

The server (``http.server`` on 127.0.0.1, in a thread) serves a zip archive
in DeepMind's layout (``9M/<step>/params``), built from a small random
checkpoint written the way the converter tests write theirs. It honours
``Range`` requests and can be told to cut a response short, to fail with a
status, or to serve other bytes.
"""

from __future__ import annotations

import errno
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import chess
import numpy as np
import pytest

from neuralengine.deepmind import download as dl
from neuralengine.deepmind import resolve_weights
from neuralengine.deepmind import numpy_ref
from neuralengine.paths import DEEPMIND_MODELS, downloaded_weights
from neuralengine.weights import read_metadata

NAME = "9M"
STEP = 6400


# ---------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``; ``server.cut`` (path -> bytes) cuts the next full response of that path
    after that many bytes; ``server.status`` (path -> code) answers with an error."""

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        if self.path in server.status:
            self.send_error(server.status[self.path])
            return
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = server.cut.pop(self.path, None)
        if cut is not None and not match:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # the connection breaks midway
            return
        self.wfile.write(body[start:])


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.cut, httpd.status, httpd.requests = {}, {}, {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/checkpoints"
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


# ---------------------------------------------------------------------------
# The archive: DeepMind's layout, built from a random checkpoint
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, numpy_ref.RefParams]:
    pytest.importorskip("orbax.checkpoint")
    pytest.importorskip("tensorstore")
    from test_deepmind import haiku_tree, save_checkpoint

    params = numpy_ref.random_params(2, 32, 8, 128, 79, seed=11)
    ema = numpy_ref.random_params(2, 32, 8, 128, 79, seed=12)
    root = save_checkpoint(tmp_path_factory.mktemp("dm") / NAME, {"params": haiku_tree(params),
                                                                  "params_ema": haiku_tree(ema)}, step=STEP)
    return root, params


def zip_folder(root: Path, arc_root: str) -> bytes:
    """``root`` zipped as ``arc_root/...``, folders included, as ``zip -r`` does."""
    out = root.parent / f"{arc_root}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            archive.write(path, f"{arc_root}/{path.relative_to(root).as_posix()}")
    data = out.read_bytes()
    out.unlink()
    return data


@pytest.fixture(scope="module")
def archive(checkpoint) -> bytes:
    data = zip_folder(checkpoint[0], NAME)
    assert len(data) > 20_000
    return data


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("NEURALENGINE_CACHE", str(folder))
    monkeypatch.delenv(dl.URL_ENV, raising=False)
    return folder


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = dl.main(list(args) + ["--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------
# The whole path
# ---------------------------------------------------------------------------

def test_download_convert_and_analyse_by_name(server, archive, checkpoint, cache, capsys, engine_command):
    server.files[f"/checkpoints/{NAME}.zip"] = archive
    code, out, err = run(capsys, NAME, "--url", server.url)
    assert code == 0, err
    target = downloaded_weights(NAME)
    assert out.splitlines()[0] == str(target)
    assert f"WeightsFile: {NAME}" in out
    meta = read_metadata(target)
    assert meta["provenance"]["checkpoint"] == NAME and meta["provenance"]["step"] == STEP
    assert target.with_suffix(".onnx").is_file()
    # Nothing else is left: no archive, no .part, no unpacked checkpoint.
    assert files_under(cache) == sorted(str(p.relative_to(cache)) for p in (target, target.with_suffix(".onnx")))
    assert server.requests == [(f"/checkpoints/{NAME}.zip", None)]

    # A second run finds the conversion and fetches nothing.
    code, out, err = run(capsys, NAME.lower(), "--url", server.url)
    assert code == 0 and "already downloaded" in err and len(server.requests) == 1

    # The bare name works where a weights file is expected.
    assert resolve_weights(NAME) == resolve_weights(NAME.lower()) == target
    env = dict(os.environ, NEURALENGINE_CACHE=str(cache))
    board = chess.Board()
    best, _ = numpy_ref.best_move(checkpoint[1], "action_value", board)
    result = subprocess.run(engine_command + ["analyse", "--weights", NAME, "--backend", "onnx", "--top", "1"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert f"{NAME}.safetensors" in result.stdout
    first = next(line for line in result.stdout.splitlines() if line.strip().startswith("1 "))
    assert first.split()[1] == best.uci()


PLAIN_INSTALL = Path(__file__).resolve().parent / "plain_install.py"


def test_plain_install_downloads_converts_and_analyses(server, archive, checkpoint, cache):
    """The README's path: ``pip install . && neuralengine download 9M && neuralengine analyse --weights 9M``,
    with PyTorch, onnx, orbax and JAX unimportable (``tests/plain_install.py``)."""
    server.files[f"/checkpoints/{NAME}.zip"] = archive
    env = dict(os.environ, NEURALENGINE_CACHE=str(cache))
    plain = [sys.executable, str(PLAIN_INSTALL)]
    result = subprocess.run(plain + ["download", NAME, "--url", server.url, "--quiet"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    target = downloaded_weights(NAME)
    assert result.stdout.splitlines()[0] == str(target)
    assert target.with_suffix(".onnx").is_file()  # the graph was written without PyTorch
    result = subprocess.run(plain + ["analyse", "--weights", NAME, "--top", "3"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    board = chess.Board()
    moves, scores = numpy_ref.move_scores(checkpoint[1], "action_value", board)
    expected = [moves[i].uci() for i in np.argsort(-scores, kind="stable")[:3]]
    ranked = [line.split()[1] for line in result.stdout.splitlines() if re.match(r"\s*[123] ", line)]
    assert ranked == expected
    # The ONNX graph beside the weights was used: nothing was exported into the cache's graph folder.
    assert not (cache / "onnx").exists()


@pytest.mark.skipif(os.name == "nt", reason="folders are not locked on Windows")
def test_a_second_download_waits_for_the_first_then_uses_its_result(server, archive, cache):
    """Two downloads of one model: the second waits on the cache's lock (no lock file is left), then finds the
    first one's conversion and fetches nothing. Driven by events, not sleeps."""
    server.files[f"/checkpoints/{NAME}.zip"] = archive
    first_holds, second_waits = threading.Event(), threading.Event()
    results: dict[str, object] = {}
    real_download = dl._download

    def first_download(*args, **kwargs):
        first_holds.set()
        assert second_waits.wait(60), "the second download never waited"
        return real_download(*args, **kwargs)

    def second_report(message: str) -> None:
        results.setdefault("second_messages", []).append(message)
        if "waiting" in message:
            second_waits.set()

    def run_first() -> None:
        results["first"] = dl.download(NAME, base_url=server.url, progress=False, report=lambda m: None)

    original = dl._download
    dl._download = first_download
    try:
        thread = threading.Thread(target=run_first)
        thread.start()
        assert first_holds.wait(60)
        dl._download = original  # the second call runs the real one, once it gets the lock
        results["second"] = dl.download(NAME, base_url=server.url, progress=False, report=second_report)
        thread.join(60)
    finally:
        dl._download = original
    assert results["first"] == results["second"] == downloaded_weights(NAME)
    assert any("already downloaded" in m for m in results["second_messages"])
    assert len(server.requests) == 1  # fetched once
    assert not any(p.name.endswith((".lock", ".part")) for p in cache.rglob("*"))


def test_env_var_sets_the_base_url(server, archive, cache, capsys, monkeypatch):
    server.files[f"/checkpoints/{NAME}.zip"] = archive
    monkeypatch.setenv(dl.URL_ENV, server.url + "/")
    code, _, err = run(capsys, NAME, "--no-onnx")
    assert code == 0, err
    assert downloaded_weights(NAME).is_file()


def test_interrupted_download_resumes_with_a_range_request(server, archive, cache, capsys):
    path = f"/checkpoints/{NAME}.zip"
    server.files[path] = archive
    cut = len(archive) // 3
    server.cut[path] = cut
    code, _, err = run(capsys, NAME, "--url", server.url, "--keep-archive", "--no-onnx")
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith("neuralengine download: ") and "Traceback" not in err
    assert f"interrupted after {cut:,} of {len(archive):,} bytes" in line and "run the same command again" in line
    part = dl.downloads_dir() / f"{NAME}.zip.part"
    assert part.read_bytes() == archive[:cut]
    assert files_under(cache) == [str(part.relative_to(cache))]  # never a half file under the final name

    code, _, err = run(capsys, NAME, "--url", server.url, "--keep-archive", "--no-onnx")
    assert code == 0, err
    assert server.requests[-1] == (path, f"bytes={cut}-")
    assert "resuming" in err
    assert (dl.downloads_dir() / f"{NAME}.zip").read_bytes() == archive
    assert not part.exists()
    assert read_metadata(downloaded_weights(NAME))["provenance"]["step"] == STEP


def test_server_ignoring_range_starts_again(server, archive, cache, capsys, monkeypatch):
    path = f"/checkpoints/{NAME}.zip"
    server.files[path] = archive
    part = dl.downloads_dir() / f"{NAME}.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes of another attempt")
    monkeypatch.setattr(Handler, "do_GET", _no_range(Handler.do_GET))
    code, _, err = run(capsys, NAME, "--url", server.url, "--keep-archive", "--no-onnx")
    assert code == 0, err
    assert "starting again" in err
    assert (dl.downloads_dir() / f"{NAME}.zip").read_bytes() == archive


def _no_range(handler):
    def do_get(self):
        if "Range" in self.headers:
            del self.headers["Range"]
        handler(self)
    return do_get


# ---------------------------------------------------------------------------
# Errors: one line, nothing left behind
# ---------------------------------------------------------------------------

def _one_line_error(code: int, err: str) -> str:
    assert code == 1
    assert "Traceback" not in err
    errors = [line for line in err.strip().splitlines() if line.startswith("neuralengine download: ")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    return errors[0]


def test_http_404(server, cache, capsys):
    line = _one_line_error(*run(capsys, NAME, "--url", server.url)[::2])
    assert "HTTP 404" in line and f"{NAME}.zip" in line
    assert files_under(cache) == []


@pytest.mark.parametrize("status", [500, 503])
def test_http_5xx(server, archive, cache, capsys, status):
    server.files[f"/checkpoints/{NAME}.zip"] = archive
    server.status[f"/checkpoints/{NAME}.zip"] = status
    line = _one_line_error(*run(capsys, NAME, "--url", server.url)[::2])
    assert f"HTTP {status}" in line and "try again later" in line
    assert files_under(cache) == []


def test_no_network(cache, capsys):
    # A port nobody listens on: the connection is refused, as with no network.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    line = _one_line_error(*run(capsys, NAME, "--url", f"http://127.0.0.1:{port}/x")[::2])
    assert "cannot reach 127.0.0.1" in line
    assert files_under(cache) == []


def _truncated(archive: bytes) -> bytes:
    return archive[:len(archive) // 2]


def _flipped(archive: bytes) -> bytes:
    # Damage the compressed data of the largest member: the CRC check fails.
    with zipfile.ZipFile(__import__("io").BytesIO(archive)) as zf:
        info = max(zf.infolist(), key=lambda i: i.compress_size)
    offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size // 2
    data = bytearray(archive)
    data[offset] ^= 0xFF
    return bytes(data)


def _other_layout(checkpoint_root: Path) -> bytes:
    return zip_folder(checkpoint_root / str(STEP), "params_only")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "crc", "layout"])
def test_corrupt_archive(server, archive, checkpoint, cache, capsys, damage):
    body = {"garbage": lambda: b"<html>not a zip</html>" * 100, "truncated": lambda: _truncated(archive),
            "crc": lambda: _flipped(archive), "layout": lambda: _other_layout(checkpoint[0])}[damage]()
    server.files[f"/checkpoints/{NAME}.zip"] = body
    line = _one_line_error(*run(capsys, NAME, "--url", server.url)[::2])
    words = {"garbage": "not a valid zip archive", "truncated": "not a valid zip archive", "crc": "CRC",
             "layout": "does not have DeepMind's layout"}[damage]
    assert words in line
    assert files_under(cache) == []


def test_disk_full(server, archive, cache, capsys, monkeypatch):
    server.files[f"/checkpoints/{NAME}.zip"] = archive
    calls = []

    def full(fh, data):
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fh.write(data)

    monkeypatch.setattr(dl, "CHUNK", 4096)
    monkeypatch.setattr(dl, "_write", full)
    line = _one_line_error(*run(capsys, NAME, "--url", server.url)[::2])
    assert "disk full" in line
    assert files_under(cache) == []


def test_unknown_name(cache, capsys):
    code, _, err = run(capsys, "12M")
    assert code == 2
    assert "unknown model '12M'" in err and all(name in err for name in DEEPMIND_MODELS)
    assert files_under(cache) == []


def test_name_not_downloaded_yet(cache):
    from neuralengine.deepmind import DeepMindError

    with pytest.raises(DeepMindError, match=r"neuralengine download 270M"):
        resolve_weights("270m")


PUZZLE = ("PuzzleId,FEN,Moves,Rating\n"
          "00008,r6k/pp2r2p/4Rp1Q/3p4/8/1N1P2R1/PqP2bPP/7K b - - 0 24,f2g3 e6e7 b2b1 b3c1 b1c1 h6c1,1913\n")


@pytest.mark.parametrize("command", ["analyse", "bench", "match", "puzzles"])
def test_every_weights_option_takes_the_model_name(command, cache, tmp_path, capsys):
    """One route from a name to weights: each command's --weights answers a released model that is not
    downloaded yet with the command that downloads it."""
    from neuralengine.cli import main

    args = [command]
    if command == "puzzles":
        (tmp_path / "puzzles.csv").write_text(PUZZLE)
        args += [str(tmp_path / "puzzles.csv"), "--out", str(tmp_path / "out")]
    code = main(args + ["--weights", "270M"])
    err = capsys.readouterr().err
    assert code in (1, 2) and "run 'neuralengine download 270M'" in err, err


def test_unsafe_member_names_are_refused(tmp_path):
    bad = tmp_path / "9M.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("9M/6400/params/_METADATA", "{}")
        archive.writestr("9M/../../escape.txt", "x")
    with pytest.raises(dl.DownloadError, match="layout"):
        dl.check_archive(bad, NAME)


def test_cli_lists_the_command(engine_command):
    out = subprocess.run(engine_command + ["--help"], capture_output=True, text=True, timeout=120)
    assert "download" in out.stdout
    np.testing.assert_equal(out.returncode, 0)
