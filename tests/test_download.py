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
import select
import signal
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


@pytest.mark.slow
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


def test_disk_full_while_downloading_keeps_the_part_for_resuming(server, archive, cache, capsys, monkeypatch):
    path = f"/checkpoints/{NAME}.zip"
    server.files[path] = archive
    calls = []

    def full(fh, data):
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fh.write(data)

    monkeypatch.setattr(dl, "CHUNK", 4096)
    monkeypatch.setattr(dl, "_write", full)
    line = _one_line_error(*run(capsys, NAME, "--url", server.url)[::2])
    assert "disk full" in line and "resume" in line
    part = dl.downloads_dir() / f"{NAME}.zip.part"
    assert part.read_bytes() == archive[:4096]
    assert files_under(cache) == [str(part.relative_to(cache))]

    # With space again, the next run asks only for the rest.
    monkeypatch.undo()
    monkeypatch.setenv("NEURALENGINE_CACHE", str(cache))
    code, _, err = run(capsys, NAME, "--url", server.url, "--no-onnx")
    assert code == 0, err
    assert server.requests[-1] == (path, "bytes=4096-")
    assert read_metadata(downloaded_weights(NAME))["provenance"]["step"] == STEP


def test_disk_full_while_unpacking_keeps_the_archive(server, archive, cache, capsys, monkeypatch):
    server.files[f"/checkpoints/{NAME}.zip"] = archive
    real_write = dl._write

    def full_but_downloads(fh, data):
        if not fh.name.endswith(".part"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(fh, data)

    monkeypatch.setattr(dl, "_write", full_but_downloads)
    line = _one_line_error(*run(capsys, NAME, "--url", server.url)[::2])
    assert "disk full" in line and "unpacking" in line and "archive is kept" in line
    kept = dl.downloads_dir() / f"{NAME}.zip"
    assert kept.read_bytes() == archive
    assert files_under(cache) == [str(kept.relative_to(cache))]  # nothing half unpacked

    monkeypatch.setattr(dl, "_write", real_write)
    code, _, err = run(capsys, NAME, "--url", server.url)
    assert code == 0, err
    assert len(server.requests) == 1  # the kept archive was used, not downloaded again
    assert read_metadata(downloaded_weights(NAME))["provenance"]["step"] == STEP


def _member_headers(data: bytes, member: str) -> tuple[int, int]:
    """Offsets of ``member``'s local header and of its central directory record."""
    with zipfile.ZipFile(__import__("io").BytesIO(data)) as zf:
        local = zf.getinfo(member).header_offset
    central = data.find(b"PK\x01\x02")
    while central >= 0:
        length = int.from_bytes(data[central + 28:central + 30], "little")
        if data[central + 46:central + 46 + length].decode() == member:
            return local, central
        central = data.find(b"PK\x01\x02", central + 1)
    raise AssertionError(f"{member} not in the central directory")


def _largest_member(data: bytes) -> zipfile.ZipInfo:
    with zipfile.ZipFile(__import__("io").BytesIO(data)) as zf:
        return max(zf.infolist(), key=lambda i: i.compress_size)


def _bad_deflate(archive: bytes) -> bytes:
    # The first deflate block of the largest member gets the reserved block type: zlib refuses the stream.
    info = _largest_member(archive)
    local = info.header_offset
    name_length, extra_length = (int.from_bytes(archive[local + i:local + i + 2], "little") for i in (26, 28))
    data = bytearray(archive)
    data[local + 30 + name_length + extra_length] = 0b111
    return bytes(data)


def _encrypted(archive: bytes) -> bytes:
    info = _largest_member(archive)
    local, central = _member_headers(archive, info.filename)
    data = bytearray(archive)
    data[local + 6] |= 1  # general purpose flags, bit 0: encrypted
    data[central + 8] |= 1
    return bytes(data)


def _unknown_method(archive: bytes) -> bytes:
    info = _largest_member(archive)
    local, central = _member_headers(archive, info.filename)
    data = bytearray(archive)
    data[local + 8:local + 10] = (99).to_bytes(2, "little")  # 99: AES, which zipfile cannot read
    data[central + 10:central + 12] = (99).to_bytes(2, "little")
    return bytes(data)


@pytest.mark.parametrize("damage", ["deflate", "encrypted", "method"])
def test_undecodable_archive_is_one_line_and_removed(server, archive, cache, capsys, damage):
    body = {"deflate": _bad_deflate, "encrypted": _encrypted, "method": _unknown_method}[damage](archive)
    server.files[f"/checkpoints/{NAME}.zip"] = body
    line = _one_line_error(*run(capsys, NAME, "--url", server.url)[::2])
    words = {"deflate": "corrupt", "encrypted": "encrypted", "method": "compression method 99"}[damage]
    assert words in line and "download it again" in line
    assert files_under(cache) == []  # the damaged archive is not kept for the next run to trip over
    # The next run fetches it again (and fails the same way, without a traceback).
    _one_line_error(*run(capsys, NAME, "--url", server.url)[::2])
    assert len(server.requests) == 2


def _junk_checkpoint(root: Path) -> bytes:
    params = root / NAME / str(STEP) / "params"
    (params / "d").mkdir(parents=True)
    (params / "_METADATA").write_text("{not json")
    (params / "manifest.ocdbt").write_bytes(np.random.default_rng(5).bytes(3000))
    (params / "d" / "0123").write_bytes(np.random.default_rng(6).bytes(5000))
    return zip_folder(root / NAME, NAME)


def test_archive_with_junk_contents_says_force(server, archive, cache, capsys, tmp_path):
    path = f"/checkpoints/{NAME}.zip"
    server.files[path] = _junk_checkpoint(tmp_path / "junk")
    line = _one_line_error(*run(capsys, NAME, "--url", server.url)[::2])
    assert "cannot be converted" in line and "--force" in line
    # The archive is kept (the converter may be at fault); nothing unpacked or converted stays.
    kept = dl.downloads_dir() / f"{NAME}.zip"
    assert files_under(cache) == [str(kept.relative_to(cache))]
    server.files[path] = archive
    code, _, err = run(capsys, NAME, "--url", server.url, "--force")
    assert code == 0, err
    assert len(server.requests) == 2
    assert read_metadata(downloaded_weights(NAME))["provenance"]["step"] == STEP


def _zeros_bomb(folder: Path, size: int) -> bytes:
    out = folder / "bomb.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{NAME}/{STEP}/params/_METADATA", "{}")
        with zf.open(f"{NAME}/{STEP}/params/d/zeros", "w") as member:
            block = bytes(1 << 20)
            for _ in range(size >> 20):
                member.write(block)
    return out.read_bytes()


def test_archive_unpacking_far_beyond_its_size_is_refused(server, cache, capsys, tmp_path, monkeypatch):
    """A small archive that would unpack to 150 MiB of zeros (as a released 9M checkpoint is about as
    large unpacked, only the ratio of unpacked to packed size gives it away)."""
    body = _zeros_bomb(tmp_path, 150 << 20)
    assert len(body) < 1 << 20
    server.files[f"/checkpoints/{NAME}.zip"] = body
    written = []
    real_write = dl._write
    monkeypatch.setattr(dl, "_write", lambda fh, data: (written.append(len(data)), real_write(fh, data)))
    line = _one_line_error(*run(capsys, NAME, "--url", server.url)[::2])
    assert "would unpack to 157,286,402 bytes" in line and "refused" in line
    assert sum(written) == len(body)  # the download only: nothing was unpacked
    assert files_under(cache) == []


def test_unpack_limit_follows_the_model_table():
    # The released archives hold float32 arrays, which deflate hardly shrinks.
    assert dl.unpack_limit("270M", 2_000_000_000) > 2 * 4 * 270_000_000
    assert dl.unpack_limit("9M", 150_000_000) < dl.unpack_limit("270M", 150_000_000)
    # Whatever the archive's own size, nothing unpacks beyond the model's expected size with its margin.
    assert dl.unpack_limit("9M", 10**12) == dl.unpack_limit("9M", 10**13) < 10**9
    # A small archive may not unpack to much more than a few times its size.
    assert dl.unpack_limit("270M", 1_000_000) < 100_000_000


def test_plain_http_base_url_is_warned_about(server, archive, cache, capsys):
    server.files[f"/checkpoints/{NAME}.zip"] = archive
    code, _, err = run(capsys, NAME, "--url", server.url, "--no-onnx")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "http://" in warnings[0] and "https://" in warnings[0]
    messages: list[str] = []
    dl.warn_if_insecure("https://storage.googleapis.com/searchless_chess/checkpoints/9M.zip", messages.append)
    assert messages == []


def test_ctrl_c_waits_for_the_next_safe_point():
    """Inside deferred_interrupts, SIGINT neither stops Python code nor a native wait (tensorstore's, where a
    KeyboardInterrupt would leave its threads working); the next safe point raises it."""
    ts = pytest.importorskip("tensorstore")
    from neuralengine.deepmind import interrupt

    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even when run ignored
    previous = signal.getsignal(signal.SIGINT)
    steps = []
    promise, future = ts.Promise.new()

    def interrupt_then_finish() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        promise.set_result("read")

    with pytest.raises(KeyboardInterrupt):
        with interrupt.deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            steps.append(sum(range(1000)))  # plain Python code goes on
            helper = threading.Thread(target=interrupt_then_finish)
            helper.start()
            steps.append(future.result())  # and so does a native wait
            helper.join()
            interrupt.safe_point("test")
            steps.append("past the safe point")
    try:
        assert steps == [499500, "read"]
        assert signal.getsignal(signal.SIGINT) is previous
        interrupt.safe_point("test")  # the flag does not outlive the block
    finally:
        signal.signal(signal.SIGINT, outer)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize("stage", ["unpack", "convert"])
def test_ctrl_c_while_unpacking_or_converting(server, archive, cache, tmp_path, engine_command, stage):
    """Ctrl-C at a fixed point of the real command: after the first member is unpacked, or after the first
    array of the checkpoint is read (tensorstore's threads running). One line, exit 130, nothing half
    written; the archive stays, and the next run converts it without downloading it again."""
    path = f"/checkpoints/{NAME}.zip"
    server.files[path] = archive
    hold = tmp_path / "hold"
    hold.mkdir()
    os.mkfifo(hold / "reached")
    os.mkfifo(hold / "go")
    # Both pipes are held open for reading and writing here, so that the command never blocks opening them.
    reached, go = os.open(hold / "reached", os.O_RDWR), os.open(hold / "go", os.O_RDWR)
    env = dict(os.environ, NEURALENGINE_CACHE=str(cache), NEURALENGINE_HOLD=f"{stage}:{hold}")
    # Ctrl-C as a terminal delivers it: the command gets SIGINT's default action even where this test runs with
    # SIGINT ignored (a background job of a non-interactive shell inherits it ignored).
    proc = subprocess.Popen(engine_command + ["download", NAME, "--url", server.url, "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        ready, _, _ = select.select([reached], [], [], 180)
        assert ready, "the command never reached the hold point"
        assert os.read(reached, 100) == f"{stage}\n".encode()
        proc.send_signal(signal.SIGINT)
        os.write(go, b"x")
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(reached)
        os.close(go)
    assert proc.returncode == 130, err
    assert out == ""
    lines = err.strip().splitlines()
    assert lines[-1] == "neuralengine download: interrupted; run the same command again to resume", err
    assert all(line.startswith(("warning: ", "downloading ", f"{NAME}.zip: ")) for line in lines[:-1]), err
    kept = dl.downloads_dir() / f"{NAME}.zip"
    assert files_under(cache) == [str(kept.relative_to(cache))]

    result = subprocess.run(engine_command + ["download", NAME, "--url", server.url, "--quiet", "--no-onnx"],
                            capture_output=True, text=True, timeout=300, env=dict(os.environ,
                                                                                  NEURALENGINE_CACHE=str(cache)))
    assert result.returncode == 0, result.stderr
    assert len(server.requests) == 1
    assert read_metadata(downloaded_weights(NAME))["provenance"]["step"] == STEP


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
