"""``neuralengine download NAME``: fetch, check, unpack and convert a released DeepMind model.

Usage::

    neuralengine download 9M [--url BASE] [--force] [--keep-archive] [--no-onnx] [-q]

NAME is one of :data:`neuralengine.paths.DEEPMIND_MODELS`. The archive
``BASE/NAME.zip`` (``BASE`` from ``--url``, ``$NEURALENGINE_DEEPMIND_URL``
or DeepMind's bucket) is downloaded into ``<cache>/deepmind/downloads/`` as
``NAME.zip.part`` and renamed to ``NAME.zip`` only once complete; a broken
connection leaves the ``.part`` file, and the next run resumes it with an
HTTP range request. The archive is then checked (its zip directory and the
``NAME/<step>/params`` layout), unpacked (which checks every member's CRC) into ``<cache>/deepmind/checkpoints/``
and converted into ``<cache>/deepmind/models/NAME.safetensors`` (with its ONNX
graph); the archive and the unpacked checkpoint are deleted afterwards unless
``--keep-archive`` / ``--keep-checkpoint``. ``WeightsFile`` and ``--weights``
then accept the bare NAME.

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
from pathlib import Path
from typing import IO, Callable

from neuralengine.atomic import folder_lock
from neuralengine.deepmind.errors import DeepMindError
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


def downloads_dir() -> Path:
    return cache_dir() / "deepmind" / "downloads"


def checkpoints_dir() -> Path:
    return cache_dir() / "deepmind" / "checkpoints"


# ---------------------------------------------------------------------------
# Fetching, with resume
# ---------------------------------------------------------------------------

def _disk_error(exc: OSError, path: Path) -> DownloadError:
    if exc.errno == errno.ENOSPC:
        return DownloadError(f"disk full while writing {path}: free some space (or set NEURALENGINE_CACHE "
                             "to another disk) and run the command again")
    return DownloadError(f"cannot write {path}: {exc.strerror or exc}")


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
        raise _disk_error(exc, target.parent) from None
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
        except OSError as exc:
            part.unlink(missing_ok=True)
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

def check_archive(path: Path, name: str) -> list[int]:
    """Check a downloaded archive; returns the steps it holds.

    Its zip directory must be readable, every member must lie under ``name/``
    (no absolute paths, no ``..``), and at least one ``name/<step>/params/``
    folder must be there. The members' CRCs are checked while :func:`unpack`
    reads them, so the archive is decompressed once.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise DownloadError(f"{path.name} is not a valid zip archive ({exc}); it was removed, download it again") \
            from None
    except OSError as exc:
        raise DownloadError(f"cannot read {path}: {exc.strerror or exc}") from None
    steps = set()
    for member in members:
        parts = member.replace("\\", "/").split("/")
        if member.startswith("/") or ".." in parts or parts[0] != name:
            raise DownloadError(f"{path.name} does not have DeepMind's layout: {member!r} is not inside {name}/")
        if len(parts) >= 4 and parts[1].isdigit() and parts[2] == "params" and parts[3]:
            steps.add(int(parts[1]))
    if not steps:
        raise DownloadError(f"{path.name} does not have DeepMind's layout: no {name}/<step>/params/ inside")
    return sorted(steps)


def unpack(path: Path, name: str, dest: Path) -> Path:
    """Unpack a checked archive into ``dest/name`` (replacing an older copy); returns that folder."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".unpack", dir=dest))
    except OSError as exc:
        raise _disk_error(exc, dest) from None
    try:
        try:
            with zipfile.ZipFile(path) as archive:
                archive.extractall(staging)  # checks every member's CRC as it reads it
        except (zipfile.BadZipFile, EOFError) as exc:
            raise DownloadError(f"{path.name} is corrupt ({exc}: fails its CRC check); it was removed, "
                                "download it again") from None
        final = dest / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging / name, final)
    except OSError as exc:
        raise _disk_error(exc, dest / name) from None
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
    the unpacked checkpoint (unless ``keep_checkpoint``). A failed conversion
    keeps the checked archive, so that the next run need not download it again.
    """
    name = model_name(name)
    folder = downloads_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _disk_error(exc, folder) from None
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
        report(f"downloading {url}")
        fetch(url, archive, progress=progress, label=f"{name}.zip", report=report)
    try:
        steps = check_archive(archive, name)
        report(f"{archive.name}: archive layout checked (step{'s' if len(steps) > 1 else ''} "
               f"{', '.join(map(str, steps))}); unpacking")
        folder = unpack(archive, name, checkpoints_dir())
    except DownloadError:
        archive.unlink(missing_ok=True)
        raise
    try:
        convert_location(locate(folder), target, onnx=onnx, report=report, progress=progress)
    except BaseException as exc:  # the weights are written atomically: nothing half-written to remove
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _disk_error(exc, target) from None
        raise
    if not keep_checkpoint:
        shutil.rmtree(folder, ignore_errors=True)
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return target


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
