"""What a result was measured on: machine, software versions, model and commit.

Every benchmark writes :func:`run_record` next to its numbers, so a figure
can always be traced to the hardware, the package versions, the exact
weights file (SHA-256 and metadata) and the source revision.

Nothing heavy is imported: versions come from the installed package
metadata, not from importing the packages.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

#: Distributions whose versions matter for the figures.
PACKAGES = ("neuralengine", "chess", "numpy", "onnxruntime", "onnxruntime-gpu", "torch", "onnx", "safetensors")


def cpu_model() -> str:
    """The CPU's model name, as precise as the platform tells."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask where there is one)."""
    try:
        return len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def total_memory_mib() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def versions() -> dict[str, str]:
    """Python and the installed versions of the packages that matter (absent ones left out)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def gpu_names() -> list[str]:
    """CUDA devices PyTorch sees, only when PyTorch is already imported (never imports it)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    try:
        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken CUDA set-up must not break a benchmark report
        pass
    return []


def machine() -> dict[str, Any]:
    return {
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpus_logical": os.cpu_count(),
        "cpus_usable": usable_cpus(),
        "memory_mib": total_memory_mib(),
        "gpus": gpu_names(),
    }


def git_commit(start: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """Commit and dirty flag of the source checkout holding this package, None outside git."""
    folder = Path(start) if start else Path(__file__).resolve().parent
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=folder, capture_output=True, text=True,
                             timeout=10)
        if top.returncode != 0:
            return None
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def model_info(weights: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """SHA-256, size, architecture and provenance of a weights file (None when absent or unreadable)."""
    if weights is None:
        return None
    from neuralengine.weights import WeightsError, any_config_from_metadata, file_sha256, read_metadata

    path = Path(weights)
    try:
        meta = read_metadata(path)
        cfg = any_config_from_metadata(meta, str(path))
    except (WeightsError, OSError) as exc:
        return {"path": path.name, "error": str(exc)}
    return {
        "path": path.name,
        "sha256": file_sha256(path),
        "bytes": path.stat().st_size,
        "architecture": cfg.to_dict(),
        "parameters": cfg.num_parameters(),
        "provenance": meta.get("provenance", {}),
    }


def plays_text_model(weights: str | os.PathLike[str] | None, *, other_engine: bool = False) -> bool:
    """Whether our engine plays a text model (``pgn_lm``): the weights it is given, else the shipped ones.

    ``other_engine``: the command is not ours, so without weights nothing is known (``False``).
    """
    from neuralengine.config import TEXT_KINDS
    from neuralengine.weights import WeightsError, read_metadata, weights_kind

    if weights is None:
        if other_engine:
            return False
        from neuralengine.paths import default_weights

        weights = default_weights()
    try:
        return weights_kind(read_metadata(weights)) in TEXT_KINDS
    except (WeightsError, OSError):
        return False


def run_record(weights: str | os.PathLike[str] | None = None, **extra: Any) -> dict[str, Any]:
    """The record stored with every result: time, machine, versions, model, commit, command line."""
    record = {
        "utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "model": model_info(weights),
        "source": git_commit(),
        "argv": sys.argv[1:],
    }
    record.update(extra)
    return record


# --------------------------------------------------------------------------
# Memory of other processes (Linux /proc; nothing elsewhere)
# --------------------------------------------------------------------------

_KIB = re.compile(r"^(VmHWM|VmRSS):\s+(\d+)\s+kB", re.MULTILINE)


def process_memory_kib(pid: int) -> dict[str, int]:
    """``VmHWM`` (peak resident set) and ``VmRSS`` of a process in KiB; empty when unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return {}
    return {name: int(value) for name, value in _KIB.findall(text)}


def peak_memory_kib(pid: int) -> int | None:
    """Peak resident memory of ``pid`` so far, or None where /proc is not available."""
    return process_memory_kib(pid).get("VmHWM")


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux), empty elsewhere."""
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as fh:
                kids.extend(int(x) for x in fh.read().split())
        except (OSError, ValueError):
            continue
    return kids


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = children(pid)
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children(p))
    return out


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [part.decode(errors="replace") for part in fh.read().split(b"\0") if part]
    except OSError:
        return []
