"""``neuralengine download NAME``: fetch, check, unpack and convert a released DeepMind model.

Usage::

    neuralengine download 9M [--url BASE] [--force] [--keep-archive] [--no-onnx] [-q]

NAME is one of :data:`neuralengine.paths.DEEPMIND_MODELS`. The archive
``BASE/NAME.zip`` (``BASE`` from ``--url``, ``$NEURALENGINE_DEEPMIND_URL``
or DeepMind's bucket; a plain ``http://`` one is warned about) is downloaded
into ``<cache>/deepmind/downloads/`` as ``NAME.zip.part`` and renamed to
``NAME.zip`` only once complete; a broken connection or a full disk leaves
the ``.part`` file, and the next run resumes it with an HTTP range request.

The archive is then checked (its zip directory, the ``NAME/<step>/params``
layout, no encrypted member or unknown compression method, and an unpacked
size within :func:`unpack_limit`), unpacked (which checks every member's CRC)
into ``<cache>/deepmind/checkpoints/`` and converted into
``<cache>/deepmind/models/NAME.safetensors`` (with its ONNX graph); the
archive and the unpacked checkpoint are deleted afterwards unless
``--keep-archive`` / ``--keep-checkpoint``. ``WeightsFile`` and ``--weights``
then accept the bare NAME.

Every failure is one line. A damaged archive is removed, so the next run
downloads it again; a failure of this machine (a full disk) keeps the
archive, and so does a checkpoint that cannot be converted (the message
names ``--force``). Ctrl-C while unpacking or converting ends with exit
status 130 and leaves the archive only (:mod:`neuralengine.deepmind.interrupt`).

Only the standard library speaks HTTP (``urllib``).
"""

from __future__ import annotations

import argparse
import errno
import http.client
import os
import re
import shutil
import socket
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import IO, Callable

from neuralengine.atomic import folder_lock
from neuralengine.deepmind.errors import DeepMindError
from neuralengine.deepmind.interrupt import deferred_interrupts, safe_point
from neuralengine.paths import DEEPMIND_MODELS, cache_dir, downloaded_weights
from neuralengine.weights import WeightsError

#: Where DeepMind publishes the archives (``<base>/<name>.zip``).
DEFAULT_BASE_URL = "https://storage.googleapis.com/searchless_chess/checkpoints"

#: Environment variable overriding the base URL (a mirror, or a test server).
URL_ENV = "NEURALENGINE_DEEPMIND_URL"

#: Bytes read from the network and written per chunk.
CHUNK = 1 << 20

#: Seconds a connection may stay silent before the download counts as interrupted.
TIMEOUT = 60.0

Reporter = Callable[[str], None]


class DownloadError(DeepMindError):
    """A download, check or unpack that failed; the message is one line."""


class Interrupted(DownloadError):
    """The connection broke midway; the ``.part`` file is kept for resuming."""


class DamagedArchive(DownloadError):
    """The archive itself is at fault (not this machine): it is removed, and the next run downloads it again."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def model_name(text: str) -> str:
    """The released model ``text`` names (any case), or a :class:`DownloadError` listing them."""
    for name in DEEPMIND_MODELS:
        if text.lower() == name.lower():
            return name
    raise DownloadError(f"unknown model {text!r}; DeepMind released {', '.join(DEEPMIND_MODELS)}")


def archive_url(name: str, base: str | None = None) -> str:
    base = base or os.environ.get(URL_ENV) or DEFAULT_BASE_URL
    return base.rstrip("/") + "/" + urllib.parse.quote(name) + ".zip"


def warn_if_insecure(url: str, report: Reporter) -> None:
    """Warn when ``url`` is plain HTTP: anyone on the way could swap the archive."""
    if urllib.parse.urlsplit(url).scheme.lower() == "http":
        report(f"warning: {url} is plain http://, so the archive could be altered on its way; "
               "prefer an https:// mirror")


def downloads_dir() -> Path:
    return cache_dir() / "deepmind" / "downloads"


def checkpoints_dir() -> Path:
    return cache_dir() / "deepmind" / "checkpoints"


# ---------------------------------------------------------------------------
# Fetching, with resume
# ---------------------------------------------------------------------------

#: Per stage: what failed, and what to do next.
_STAGES = {
    "prepare": ("creating", "run the command again"),
    "download": ("downloading into", "run the command again to resume the download"),
    "unpack": ("unpacking into", "run the command again (the downloaded archive is kept)"),
    "convert": ("writing", "run the command again (the downloaded archive is kept)"),
}


def _disk_error(exc: OSError, path: Path, stage: str = "download") -> DownloadError:
    """A failure of this machine while writing ``path``; the message says what to do next."""
    doing, again = _STAGES[stage]
    if exc.errno == errno.ENOSPC:
        return DownloadError(f"disk full while {doing} {path}: free some space (or set NEURALENGINE_CACHE "
                             f"to another disk) and {again}")
    return DownloadError(f"cannot write {path}: {exc.strerror or exc}; {again}")


def _http_error(exc: urllib.error.HTTPError, url: str) -> DownloadError:
    reason = exc.reason or http.client.responses.get(exc.code, "")
    if exc.code == 404:
        return DownloadError(f"{url}: HTTP 404 {reason}: no such archive (check the name or --url)")
    if exc.code >= 500:
        return DownloadError(f"{url}: HTTP {exc.code} {reason}: the server failed; try again later")
    return DownloadError(f"{url}: HTTP {exc.code} {reason}")


def _network_error(exc: BaseException, url: str) -> DownloadError:
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, OSError) and reason.strerror:
        reason = reason.strerror
    host = urllib.parse.urlsplit(url).netloc or url
    return DownloadError(f"cannot reach {host} ({reason}); check the network connection")


def _total_from(response: http.client.HTTPResponse, offset: int) -> int | None:
    """The whole archive's size, from Content-Range (206) or Content-Length."""
    match = re.match(r"bytes\s+\d+-\d+/(\d+)", response.headers.get("Content-Range", ""))
    if match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _write(fh: IO[bytes], data: bytes) -> None:
    fh.write(data)


def fetch(url: str, target: Path, *, progress: bool = True, label: str = "download",
          report: Reporter = _stderr) -> Path:
    """Download ``url`` to ``target``, through ``target.part``; resumes a ``.part`` left by an earlier run."""
    from neuralengine.progress import Progress

    part = target.with_name(target.name + ".part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _disk_error(exc, target.parent, "prepare") from None
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "neuralengine"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # The range starts at or past the end: the part may already be whole.
            match = re.search(r"/(\d+)", exc.headers.get("Content-Range", "") if exc.headers else "")
            exc.close()
            if match and int(match.group(1)) == offset:
                os.replace(part, target)
                return target
            part.unlink(missing_ok=True)
            return fetch(url, target, progress=progress, label=label, report=report)
        exc.close()
        raise _http_error(exc, url) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _network_error(exc, url) from None

    with response:
        if offset and response.status != 206:
            report(f"{url}: the server does not resume downloads; starting again")
            offset = 0
        elif offset:
            report(f"resuming {target.name} at {offset:,} bytes")
        total = _total_from(response, offset)
        try:
            fh = open(part, "ab" if offset else "wb")
        except OSError as exc:
            raise _disk_error(exc, part) from None
        bar = Progress(label, total=total, enabled=progress, data=True, initial=offset)
        done = offset
        try:
            with fh:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (http.client.IncompleteRead, OSError, http.client.HTTPException) as exc:
                        # IncompleteRead: the server closed early. OSError: reset or timeout.
                        got = getattr(exc, "partial", b"")
                        if got:
                            _write(fh, got)
                            done += len(got)
                        raise Interrupted(f"download of {target.name} interrupted after {done:,}"
                                          f"{f' of {total:,}' if total else ''} bytes ({_reason(exc)}); "
                                          "run the same command again to resume") from None
                    if not chunk:
                        break
                    _write(fh, chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
        except OSError as exc:  # the bytes written so far stay in the .part file, for resuming
            raise _disk_error(exc, part) from None
        finally:
            bar.close()
    if total is not None and done != total:
        raise Interrupted(f"download of {target.name} interrupted after {done:,} of {total:,} bytes (the "
                          "connection closed early); run the same command again to resume")
    os.replace(part, target)
    return target


def _reason(exc: BaseException) -> str:
    if isinstance(exc, http.client.IncompleteRead):
        return "the server closed the connection"
    if isinstance(exc, socket.timeout):
        return "timed out"
    return getattr(exc, "strerror", None) or type(exc).__name__


# ---------------------------------------------------------------------------
# Checking and unpacking
# ---------------------------------------------------------------------------

#: Compression methods this Python can unpack, and the errors their decoders raise on a damaged
#: stream (bz2's is an OSError).
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_DECODE_ERRORS: tuple[type[BaseException], ...] = (zlib.error, OSError, ValueError, RuntimeError,
                                                    NotImplementedError)
try:
    import bz2  # noqa: F401  (optional in a Python built without libbz2)
except ImportError:
    pass
else:
    _METHODS[zipfile.ZIP_BZIP2] = "bzip2"
try:
    import lzma
except ImportError:
    pass
else:
    _METHODS[zipfile.ZIP_LZMA] = "lzma"
    _DECODE_ERRORS += (lzma.LZMAError,)

#: Bytes per float32 parameter, and the copies of the parameters an archive may hold
#: (``params``, ``params_ema`` and the optimiser's two moments).
_BYTES_PER_PARAMETER = 4
_COPIES = 4

#: Margins of :func:`unpack_limit`: a factor on the model's expected size and on the
#: archive's own size (deflate barely shrinks float32 arrays), and a fixed allowance.
_MODEL_MARGIN = 2
_RATIO = 16
_SLACK = 64 << 20


def unpack_limit(name: str, archive_size: int) -> int:
    """The most bytes the archive of model ``name``, ``archive_size`` bytes long, may unpack to.

    Both bounds must hold: twice what ``name``'s parameters take in float32
    (four copies: ``params``, ``params_ema`` and two optimiser moments; from
    :data:`~neuralengine.paths.DEEPMIND_MODELS`), and sixteen times the
    archive's size, each plus 64 MiB. A released archive is well inside both;
    a small archive that inflates to gigabytes of zeros is not.
    """
    expected = DEEPMIND_MODELS[name] * _BYTES_PER_PARAMETER * _COPIES
    return min(_MODEL_MARGIN * expected, _RATIO * archive_size) + _SLACK


def check_archive(path: Path, name: str) -> list[int]:
    """Check a downloaded archive; returns the steps it holds.

    Its zip directory must be readable, every member must lie under ``name/``
    (no absolute paths, no ``..``), no member may be encrypted or use a
    compression method this Python lacks, and at least one
    ``name/<step>/params/`` folder must be there. The members' CRCs are
    checked while :func:`unpack` reads them, so the archive is decompressed
    once. Problems of the archive raise :class:`DamagedArchive`.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise DamagedArchive(f"{path.name} is not a valid zip archive ({exc})") from None
    except OSError as exc:
        raise DownloadError(f"cannot read {path}: {exc.strerror or exc}") from None
    steps = set()
    for info in members:
        member = info.filename
        parts = member.replace("\\", "/").split("/")
        if member.startswith("/") or ".." in parts or parts[0] != name:
            raise DamagedArchive(f"{path.name} does not have DeepMind's layout: {member!r} is not inside {name}/")
        if info.flag_bits & 0x1:
            raise DamagedArchive(f"{path.name} holds an encrypted member ({member}); DeepMind's archives are not "
                                 "encrypted")
        if info.compress_type not in _METHODS:
            raise DamagedArchive(f"{path.name} stores {member} with compression method {info.compress_type}, "
                                 f"which cannot be unpacked here (only {', '.join(sorted(_METHODS.values()))})")
        if len(parts) >= 4 and parts[1].isdigit() and parts[2] == "params" and parts[3]:
            steps.add(int(parts[1]))
    if not steps:
        raise DamagedArchive(f"{path.name} does not have DeepMind's layout: no {name}/<step>/params/ inside")
    return sorted(steps)


def _too_large(path: Path, name: str, size: int, limit: int) -> DamagedArchive:
    return DamagedArchive(f"{path.name} would unpack to {size:,} bytes, more than a {name} checkpoint in a "
                          f"{path.stat().st_size:,}-byte archive can hold (at most {limit:,}); refused")


def _read_chunk(source: IO[bytes], path: Path, member: str) -> bytes:
    """The next chunk of a member; any failure to decode it is the archive's fault."""
    try:
        return source.read(CHUNK)
    except (zipfile.BadZipFile, EOFError) as exc:  # a CRC mismatch or a member cut short
        raise DamagedArchive(f"{path.name} is corrupt ({member}: {exc})") from None
    except _DECODE_ERRORS as exc:
        raise DamagedArchive(f"{path.name} is corrupt ({member} cannot be decompressed: {exc})") from None


def unpack(path: Path, name: str, dest: Path, *, limit: int) -> Path:
    """Unpack a checked archive into ``dest/name`` (replacing an older copy); returns that folder.

    The members go to a staging folder first, which is removed whatever
    happens; nothing is unpacked beyond ``limit`` bytes (the sizes the zip
    directory declares are checked first, then the bytes as they come). A
    damaged archive raises :class:`DamagedArchive`, a local failure (a full
    disk) a plain :class:`DownloadError`. Ctrl-C is honoured between chunks
    (:func:`~neuralengine.deepmind.interrupt.safe_point`).
    """
    try:
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".unpack", dir=dest))
    except OSError as exc:
        raise _disk_error(exc, dest, "unpack") from None
    try:
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, EOFError, ValueError) as exc:
            raise DamagedArchive(f"{path.name} is not a valid zip archive ({exc})") from None
        with archive:
            members = archive.infolist()
            declared = sum(info.file_size for info in members)
            if declared > limit:
                raise _too_large(path, name, declared, limit)
            written = 0
            for info in members:
                out = staging.joinpath(*info.filename.replace("\\", "/").split("/"))
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                try:
                    source = archive.open(info)
                except (RuntimeError, NotImplementedError, zipfile.BadZipFile, ValueError) as exc:
                    raise DamagedArchive(f"{path.name}: {info.filename} cannot be opened ({exc})") from None
                with source, open(out, "wb") as fh:
                    while chunk := _read_chunk(source, path, info.filename):
                        written += len(chunk)
                        if written > limit:
                            raise _too_large(path, name, written, limit)
                        _write(fh, chunk)
                        safe_point("unpack")
        final = dest / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging / name, final)
    except OSError as exc:
        raise _disk_error(exc, dest, "unpack") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------
# The whole command
# ---------------------------------------------------------------------------

def download(name: str, *, base_url: str | None = None, force: bool = False, keep_archive: bool = False,
             keep_checkpoint: bool = False, onnx: bool = True, progress: bool = True,
             report: Reporter = _stderr) -> Path:
    """Download, check, unpack and convert one released model; returns its weights file.

    The archive is deleted once converted (unless ``keep_archive``), and so is
    the unpacked checkpoint (unless ``keep_checkpoint``). A damaged archive is
    removed; a failed conversion, a full disk or Ctrl-C keeps the checked
    archive, so that the next run need not download it again.
    """
    name = model_name(name)
    folder = downloads_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _disk_error(exc, folder, "prepare") from None
    # One download at a time per cache: a second one waits, then finds the first one's result.
    with folder_lock(folder, lambda: report("another neuralengine download is running; waiting for it to finish")):
        return _download(name, base_url=base_url, force=force, keep_archive=keep_archive,
                         keep_checkpoint=keep_checkpoint, onnx=onnx, progress=progress, report=report)


def _download(name: str, *, base_url: str | None, force: bool, keep_archive: bool, keep_checkpoint: bool,
              onnx: bool, progress: bool, report: Reporter) -> Path:
    from neuralengine.deepmind.checkpoint import INSTALL_HINT, locate, readers_installed
    from neuralengine.deepmind.convert import convert_location
    from neuralengine.weights import read_metadata

    target = downloaded_weights(name)
    if target.is_file() and not force:
        try:
            read_metadata(target)
        except WeightsError:
            pass  # damaged: fetch and convert again
        else:
            report(f"{name} is already downloaded and converted (use --force to fetch it again)")
            return target
    if not readers_installed():
        raise DownloadError(f"converting DeepMind's checkpoints needs tensorstore: {INSTALL_HINT}")
    url = archive_url(name, base_url)
    archive = downloads_dir() / f"{name}.zip"
    if force:
        archive.unlink(missing_ok=True)
    if not archive.is_file():
        warn_if_insecure(url, report)
        report(f"downloading {url}")
        fetch(url, archive, progress=progress, label=f"{name}.zip", report=report)
    # From here on, native threads (tensorstore's) may be running: Ctrl-C waits for a safe point.
    with deferred_interrupts():
        try:
            steps = check_archive(archive, name)
            report(f"{archive.name}: archive layout checked (step{'s' if len(steps) > 1 else ''} "
                   f"{', '.join(map(str, steps))}); unpacking")
            folder = unpack(archive, name, checkpoints_dir(), limit=unpack_limit(name, archive.stat().st_size))
        except DamagedArchive as exc:
            archive.unlink(missing_ok=True)
            raise DownloadError(f"{exc}; the archive was removed: run the same command to download it again") \
                from None
        outputs = {path: _identity(path) for path in (target, target.with_suffix(".onnx"))}
        try:
            convert_location(locate(folder), target, onnx=onnx, report=report, progress=progress,
                             check=lambda: safe_point("convert"))
        except BaseException as exc:
            # The files are written atomically: only those this run completed are removed.
            shutil.rmtree(folder, ignore_errors=True)
            for path, before in outputs.items():
                if _identity(path) != before:
                    path.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise _disk_error(exc, target, "convert") from None
            if isinstance(exc, WeightsError):
                raise DownloadError(f"{archive.name} unpacked, but its checkpoint cannot be converted: "
                                    f"{_first_line(exc)}; the archive is kept in {archive.parent}: run again with "
                                    "--force to download it anew") from None
            raise
        if not keep_checkpoint:
            shutil.rmtree(folder, ignore_errors=True)
        if not keep_archive:
            archive.unlink(missing_ok=True)
    return target


def _identity(path: Path) -> tuple[int, int] | None:
    """What tells a file from its replacement: inode and modification time (None when missing)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return lines[0].rstrip(":") + (" …" if len(lines) > 1 else "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuralengine download",
        description="Download one of DeepMind's released searchless-chess models, check it, unpack it into the "
                    "cache and convert it; WeightsFile and --weights then accept its name.")
    parser.add_argument("name", metavar="NAME", help=f"the model: {', '.join(DEEPMIND_MODELS)}")
    parser.add_argument("--url", metavar="BASE",
                        help=f"where the archives are (BASE/NAME.zip; default ${URL_ENV} or {DEFAULT_BASE_URL})")
    parser.add_argument("--force", action="store_true", help="download and convert again even if already done")
    parser.add_argument("--keep-archive", action="store_true", help="keep the zip archive after converting it")
    parser.add_argument("--keep-checkpoint", action="store_true",
                        help="keep the unpacked orbax checkpoint (in the cache's deepmind/checkpoints/)")
    parser.add_argument("--no-onnx", action="store_true", help="write the weights file only")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        name = model_name(args.name)
    except DownloadError as exc:
        print(f"neuralengine download: {exc}", file=sys.stderr)
        return 2
    try:
        path = download(name, base_url=args.url, force=args.force, keep_archive=args.keep_archive,
                        keep_checkpoint=args.keep_checkpoint, onnx=not args.no_onnx, progress=not args.quiet)
    except (WeightsError, OSError) as exc:
        print(f"neuralengine download: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("neuralengine download: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(path)
    print(f"WeightsFile: {name}    (setoption name WeightsFile value {name}; neuralengine analyse --weights {name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
