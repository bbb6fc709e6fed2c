"""The weights format: a round trip, and one clear error for every kind of bad file."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import random_tensors
from neuralengine.backends import create_backend
from neuralengine.config import preset
from neuralengine.encoding import ACTIONS_SHA256, tokenizer_sha256
from neuralengine.weights import (
    METADATA_KEY,
    WeightsError,
    expected_shapes,
    load_weights,
    make_metadata,
    read_metadata,
    save_weights,
)

CFG = preset("tiny")


@pytest.fixture(scope="module")
def tensors() -> dict[str, np.ndarray]:
    return random_tensors(CFG, seed=11)


def _raw_file(path: Path, tensors: dict[str, np.ndarray], meta: object) -> Path:
    """A safetensors file written without any of our checks."""
    metadata = None if meta is None else {METADATA_KEY: meta if isinstance(meta, str) else json.dumps(meta)}
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def test_round_trip(tmp_path: Path, tensors: dict[str, np.ndarray]) -> None:
    path = save_weights(tmp_path / "m.safetensors", CFG, tensors, provenance={"source": "unit test", "step": 3})
    assert path.is_file() and not list(tmp_path.glob("*.tmp"))
    weights = load_weights(path)
    assert weights.config == CFG
    assert set(weights.tensors) == set(expected_shapes(CFG))
    for name, value in tensors.items():
        assert weights.tensors[name].dtype == np.float32
        np.testing.assert_array_equal(weights.tensors[name], value)
    assert weights.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    meta = read_metadata(path)
    assert meta == weights.metadata
    assert meta["architecture"]["attention"] == "full" and meta["architecture"]["embed_dim"] == 32
    assert meta["actions_sha256"] == ACTIONS_SHA256 == "0c85cec259a31318539a7171623ab73b01e25cd6d71fd43475e54d6e14f02e09"
    assert meta["tokenizer_sha256"] == tokenizer_sha256()
    assert meta["num_buckets"] == 128
    assert meta["provenance"] == {"source": "unit test", "step": 3}


def test_architecture_travels_with_the_file(tmp_path: Path) -> None:
    for cfg in (preset("tiny", attention="shared_board"), preset("tiny", kind="state_value"),
                preset("tiny", kind="behavioral_cloning", num_layers=1)):
        path = save_weights(tmp_path / f"{cfg.kind}-{cfg.attention}.safetensors", cfg, random_tensors(cfg))
        assert load_weights(path).config == cfg


def test_save_refuses_tensors_that_do_not_fit(tmp_path: Path, tensors: dict[str, np.ndarray]) -> None:
    bad = dict(tensors)
    del bad["head.bias"]
    with pytest.raises(WeightsError, match="missing tensors: head.bias"):
        save_weights(tmp_path / "m.safetensors", CFG, bad)
    assert not (tmp_path / "m.safetensors").exists()


# --------------------------------------------------------------------------
# Bad files: each maker returns (path, words the message must contain)
# --------------------------------------------------------------------------


def _meta(**changes: object) -> dict:
    meta = make_metadata(CFG, {"source": "test"})
    meta.update(changes)
    return meta


def missing(tmp: Path, t: dict) -> tuple[Path, str]:
    return tmp / "nowhere.safetensors", "not found"


def folder(tmp: Path, t: dict) -> tuple[Path, str]:
    (tmp / "dir.safetensors").mkdir()
    return tmp / "dir.safetensors", "folder"


def empty(tmp: Path, t: dict) -> tuple[Path, str]:
    (tmp / "e.safetensors").write_bytes(b"")
    return tmp / "e.safetensors", "empty"


def random_bytes(tmp: Path, t: dict) -> tuple[Path, str]:
    (tmp / "r.safetensors").write_bytes(np.random.default_rng(5).bytes(4096))
    return tmp / "r.safetensors", "not a safetensors file"


def header_not_json(tmp: Path, t: dict) -> tuple[Path, str]:
    junk = b"\xff\xfe not json at all"
    (tmp / "j.safetensors").write_bytes(struct.pack("<Q", len(junk)) + junk + b"\0" * 64)
    return tmp / "j.safetensors", "header is not JSON"


def truncated(tmp: Path, t: dict) -> tuple[Path, str]:
    path = save_weights(tmp / "t.safetensors", CFG, t)
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    return path, "truncated"


def truncated_in_header(tmp: Path, t: dict) -> tuple[Path, str]:
    path = save_weights(tmp / "t.safetensors", CFG, t)
    path.write_bytes(path.read_bytes()[:50])
    return path, "truncated"


def no_metadata(tmp: Path, t: dict) -> tuple[Path, str]:
    return _raw_file(tmp / "plain.safetensors", t, None), "without neuralengine metadata"


def metadata_not_json(tmp: Path, t: dict) -> tuple[Path, str]:
    return _raw_file(tmp / "m.safetensors", t, "{architecture: oops"), "corrupt neuralengine metadata"


def wrong_format(tmp: Path, t: dict) -> tuple[Path, str]:
    return _raw_file(tmp / "m.safetensors", t, _meta(format="other")), "not a neuralengine weights file"


def future_version(tmp: Path, t: dict) -> tuple[Path, str]:
    return _raw_file(tmp / "m.safetensors", t, _meta(format_version=99)), "format version 99"


def wrong_actions(tmp: Path, t: dict) -> tuple[Path, str]:
    return _raw_file(tmp / "m.safetensors", t, _meta(actions_sha256="0" * 64)), "different action table"


def wrong_tokenizer(tmp: Path, t: dict) -> tuple[Path, str]:
    return _raw_file(tmp / "m.safetensors", t, _meta(tokenizer_sha256="1" * 64)), "different tokenizer"


def architecture_not_object(tmp: Path, t: dict) -> tuple[Path, str]:
    return _raw_file(tmp / "m.safetensors", t, _meta(architecture="9M")), "bad architecture"


def architecture_missing(tmp: Path, t: dict) -> tuple[Path, str]:
    meta = _meta()
    del meta["architecture"]
    return _raw_file(tmp / "m.safetensors", t, meta), "bad architecture"


def architecture_unknown_field(tmp: Path, t: dict) -> tuple[Path, str]:
    arch = dict(CFG.to_dict(), rotary=True)
    return _raw_file(tmp / "m.safetensors", t, _meta(architecture=arch)), "unknown architecture fields: ['rotary']"


def architecture_bad_value(tmp: Path, t: dict) -> tuple[Path, str]:
    arch = dict(CFG.to_dict(), num_layers="two")
    return _raw_file(tmp / "m.safetensors", t, _meta(architecture=arch)), "num_layers must be a positive integer"


def architecture_unknown_kind(tmp: Path, t: dict) -> tuple[Path, str]:
    arch = dict(CFG.to_dict(), kind="policy_value")
    return _raw_file(tmp / "m.safetensors", t, _meta(architecture=arch)), "unknown model kind 'policy_value'"


def buckets_disagree(tmp: Path, t: dict) -> tuple[Path, str]:
    return _raw_file(tmp / "m.safetensors", t, _meta(num_buckets=64)), "num_buckets 64"


def shape_mismatch(tmp: Path, t: dict) -> tuple[Path, str]:
    bad = dict(t, **{"blocks.1.mlp.up.weight": np.zeros((100, 32), np.float32)})
    return _raw_file(tmp / "m.safetensors", bad, _meta()), "tensor blocks.1.mlp.up.weight has shape [100, 32]"


def layers_disagree(tmp: Path, t: dict) -> tuple[Path, str]:
    arch = dict(CFG.to_dict(), num_layers=3)
    return _raw_file(tmp / "m.safetensors", t, _meta(architecture=arch)), "missing tensors: blocks.2."


def missing_tensor(tmp: Path, t: dict) -> tuple[Path, str]:
    bad = {k: v for k, v in t.items() if k != "ln_f.weight"}
    return _raw_file(tmp / "m.safetensors", bad, _meta()), "missing tensors: ln_f.weight"


def unknown_tensor(tmp: Path, t: dict) -> tuple[Path, str]:
    bad = dict(t, **{"head.extra": np.zeros(3, np.float32)})
    return _raw_file(tmp / "m.safetensors", bad, _meta()), "unknown tensors: head.extra"


def nan_values(tmp: Path, t: dict) -> tuple[Path, str]:
    bad = dict(t)
    bad["blocks.0.attn.k.weight"] = bad["blocks.0.attn.k.weight"].copy()
    bad["blocks.0.attn.k.weight"][3, 4] = np.nan
    return _raw_file(tmp / "m.safetensors", bad, _meta()), "blocks.0.attn.k.weight holds NaN"


def infinite_values(tmp: Path, t: dict) -> tuple[Path, str]:
    bad = dict(t, **{"head.bias": np.full(128, np.inf, np.float32)})
    return _raw_file(tmp / "m.safetensors", bad, _meta()), "head.bias holds NaN or infinite"


BAD_FILES: list[Callable[[Path, dict], tuple[Path, str]]] = [
    missing, folder, empty, random_bytes, header_not_json, truncated, truncated_in_header, no_metadata,
    metadata_not_json, wrong_format, future_version, wrong_actions, wrong_tokenizer, architecture_not_object,
    architecture_missing, architecture_unknown_field, architecture_bad_value, architecture_unknown_kind,
    buckets_disagree, shape_mismatch, layers_disagree, missing_tensor, unknown_tensor, nan_values, infinite_values,
]
#: Problems visible from the header alone (what ``read_metadata`` checks).
HEADER_PROBLEMS = {missing, folder, empty, random_bytes, header_not_json, truncated, truncated_in_header, no_metadata,
                   metadata_not_json, wrong_format, future_version, wrong_actions, wrong_tokenizer}


@pytest.mark.parametrize("make", BAD_FILES, ids=lambda f: f.__name__)
def test_bad_file_gives_one_clear_error(make: Callable, tmp_path: Path, tensors: dict) -> None:
    path, words = make(tmp_path, tensors)
    with pytest.raises(WeightsError) as info:
        load_weights(path)
    message = str(info.value)
    assert words in message
    assert "\n" not in message and "Traceback" not in message
    if make is not folder:
        assert path.name in message or make in {shape_mismatch, missing_tensor, unknown_tensor, layers_disagree}
    if make in HEADER_PROBLEMS:
        with pytest.raises(WeightsError, match=words.split("'")[0].split("[")[0]):
            read_metadata(path)


@pytest.mark.parametrize("backend", ["onnx", "torch-cpu", "auto"])
@pytest.mark.parametrize("make", [missing, folder, empty, random_bytes, truncated, no_metadata, wrong_actions,
                                  architecture_not_object, shape_mismatch, missing_tensor, nan_values],
                         ids=lambda f: getattr(f, "__name__", str(f)))
def test_create_backend_reports_weights_errors(make: Callable, backend: str, tmp_path: Path, tensors: dict,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURALENGINE_CACHE", str(tmp_path / "cache"))
    path, words = make(tmp_path, tensors)
    with pytest.raises(WeightsError) as info:
        create_backend(path, backend)
    if make is not folder:  # a folder may also be read as a DeepMind checkpoint
        assert words in str(info.value)


def test_unknown_backend_lists_the_choices(tmp_path: Path, tensors: dict) -> None:
    path = save_weights(tmp_path / "m.safetensors", CFG, tensors)
    with pytest.raises(ValueError) as info:
        create_backend(path, "tensorflow")
    message = str(info.value)
    assert not isinstance(info.value, WeightsError)
    assert "'tensorflow'" in message
    for name in ("auto", "onnx", "torch-cpu", "torch-cuda"):
        assert name in message
