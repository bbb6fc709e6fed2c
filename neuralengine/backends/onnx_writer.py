"""The ONNX graph of a weights file, written with NumPy alone.

The ``onnx`` backend runs an ONNX graph. This module writes that graph
straight from the weights: it builds the transformer's operators (the same
computation as :class:`neuralengine.model.Transformer`) and encodes them in
ONNX's protobuf format with a small hand-written encoder, so neither PyTorch
nor the ``onnx`` package is needed. A plain ``pip install neuralengine`` can
therefore run any weights file, DeepMind's converted checkpoints included.

Graph interface (the same as the PyTorch export): action-value graphs take
``board`` int64 [B, 77] and ``actions`` int64 [B, N] and return
``log_probs`` float32 [B, N, K]; state-value and behavioural-cloning graphs
take ``board`` and return [B, K]. All three layouts are supported, and the
learned attention bias (``attention_bias``) of the layouts that have one.

Protobuf field numbers follow ``onnx/onnx.proto`` (IR version 8, opset 17).
"""

from __future__ import annotations

import math
import struct
from typing import BinaryIO, Iterable, Mapping, Sequence

import numpy as np

from neuralengine.config import ACTION_VALUE, BOARD_HEAD, FULL, SHARED_BOARD, ModelConfig
from neuralengine.encoding import action_square_tokens
from neuralengine.varint import encode_varint

#: ONNX IR version and default-domain opset of the written graphs.
IR_VERSION = 8
OPSET = 17
PRODUCER = "neuralengine"

# TensorProto.DataType values.
_FLOAT, _INT64 = 1, 7
_DTYPES = {np.dtype(np.float32): _FLOAT, np.dtype(np.int64): _INT64}
# AttributeProto.AttributeType values.
_ATTR_FLOAT, _ATTR_INT, _ATTR_STRING, _ATTR_INTS = 1, 2, 3, 7


# ---------------------------------------------------------------------------
# Protobuf wire format: varints (type 0), 32-bit (type 5), length-delimited (type 2).

def _key(field: int, wire: int) -> bytes:
    return encode_varint(field << 3 | wire)


def _int(field: int, value: int) -> bytes:
    return _key(field, 0) + encode_varint(int(value))


def _float(field: int, value: float) -> bytes:
    return _key(field, 5) + struct.pack("<f", value)


def _bytes(field: int, value: bytes) -> bytes:
    return _key(field, 2) + encode_varint(len(value)) + value


def _str(field: int, value: str) -> bytes:
    return _bytes(field, value.encode("utf-8"))


def _packed_ints(field: int, values: Iterable[int]) -> bytes:
    return _bytes(field, b"".join(encode_varint(int(v)) for v in values))


def _tensor(name: str, array: np.ndarray) -> bytes:
    """TensorProto: dims (1), data_type (2), name (8), raw_data (9, little-endian)."""
    array = np.asarray(array, order="C")  # (ascontiguousarray would turn a scalar into [1])
    dtype = _DTYPES[array.dtype]
    body = _packed_ints(1, array.shape) if array.ndim else b""
    return body + _int(2, dtype) + _str(8, name) + _bytes(9, array.astype(array.dtype.newbyteorder("<")).tobytes())


def _attribute(name: str, value: object) -> bytes:
    """AttributeProto: name (1), f (2), i (3), s (4), ints (8), type (20)."""
    if isinstance(value, float):
        return _str(1, name) + _float(2, value) + _int(20, _ATTR_FLOAT)
    if isinstance(value, (bool, int, np.integer)):
        return _str(1, name) + _int(3, int(value)) + _int(20, _ATTR_INT)
    if isinstance(value, str):
        return _str(1, name) + _str(4, value) + _int(20, _ATTR_STRING)
    if isinstance(value, (list, tuple)):
        return _str(1, name) + _packed_ints(8, value) + _int(20, _ATTR_INTS)
    raise TypeError(f"unsupported attribute {name}={value!r}")


def _value_info(name: str, elem_type: int, dims: Sequence[int | str]) -> bytes:
    """ValueInfoProto: name (1), type (2: TypeProto.tensor_type (1): elem_type (1), shape (2))."""
    shape = b"".join(_bytes(1, _str(2, d) if isinstance(d, str) else _int(1, d)) for d in dims)
    tensor_type = _int(1, elem_type) + _bytes(2, shape)
    return _str(1, name) + _bytes(2, _bytes(1, tensor_type))


# ---------------------------------------------------------------------------
# A graph under construction.

class GraphBuilder:
    """Nodes and initialisers of one graph; each op returns its output's name."""

    def __init__(self) -> None:
        self.nodes: list[bytes] = []
        self.initializers: list[bytes] = []
        self._names: set[str] = set()
        self._count = 0

    def _fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, array: np.ndarray, name: str | None = None) -> str:
        """An initialiser (float arrays are stored as float32, integers as int64)."""
        array = np.asarray(array)
        array = array.astype(np.float32 if array.dtype.kind == "f" else np.int64)
        name = name or self._fresh("const")
        if name in self._names:
            raise ValueError(f"duplicate initialiser {name}")
        self._names.add(name)
        self.initializers.append(_tensor(name, array))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attributes: object) -> str:
        out = out or self._fresh(op_type.lower())
        body = b"".join(_str(1, i) for i in inputs) + _str(2, out) + _str(3, out) + _str(4, op_type)
        body += b"".join(_bytes(5, _attribute(k, v)) for k, v in attributes.items())
        self.nodes.append(body)
        return out

    def model(self, inputs: list[bytes], outputs: list[bytes], metadata: Mapping[str, str],
              name: str) -> list[bytes]:
        """The serialised ModelProto, in pieces (a large model is never copied whole)."""
        graph = [b"".join(_bytes(1, n) for n in self.nodes) + _str(2, name)]
        for tensor in self.initializers:  # field 5, length-delimited, written without joining
            graph += [_key(5, 2) + encode_varint(len(tensor)), tensor]
        graph.append(b"".join(_bytes(11, v) for v in inputs) + b"".join(_bytes(12, v) for v in outputs))
        size = sum(len(piece) for piece in graph)
        if size >= 2**31:
            raise ValueError(f"the graph is {size / 2**30:.1f} GiB; ONNX protobufs stop at 2 GiB")
        opset = _str(1, "") + _int(2, OPSET)
        head = _int(1, IR_VERSION) + _str(2, PRODUCER) + _key(7, 2) + encode_varint(size)
        tail = _bytes(8, opset) + b"".join(_bytes(14, _str(1, k) + _str(2, v)) for k, v in metadata.items())
        return [head, *graph, tail]


# ---------------------------------------------------------------------------
# The transformer (see neuralengine.model for the same maths in PyTorch).

class _Net:
    def __init__(self, cfg: ModelConfig, tensors: Mapping[str, np.ndarray]) -> None:
        self.cfg, self.t, self.g = cfg, tensors, GraphBuilder()
        self._weights: dict[str, str] = {}

    def w(self, key: str, transpose: bool = False) -> str:
        """The initialiser of a weight (``Linear`` weights are transposed to [in, out])."""
        tag = key + (".T" if transpose else "")
        if tag not in self._weights:
            value = np.asarray(self.t[key], dtype=np.float32)
            self._weights[tag] = self.g.const(value.T if transpose else value, tag)
        return self._weights[tag]

    def linear(self, x: str, prefix: str, bias: bool = False) -> str:
        y = self.g.op("MatMul", x, self.w(prefix + ".weight", transpose=True))
        return self.g.op("Add", y, self.w(prefix + ".bias")) if bias else y

    def layer_norm(self, x: str, prefix: str) -> str:
        return self.g.op("LayerNormalization", x, self.w(prefix + ".weight"), self.w(prefix + ".bias"),
                         axis=-1, epsilon=float(self.cfg.layer_norm_eps))

    def silu(self, x: str) -> str:
        return self.g.op("Mul", x, self.g.op("Sigmoid", x))

    def heads(self, x: str, keys: bool = False) -> str:
        """[..., T, D] → [..., H, T, dh] (keys: [..., H, dh, T]) for a rank-3 ``x``."""
        cfg = self.cfg
        split = self.g.op("Reshape", x, self.g.const(np.array([0, 0, cfg.num_heads, cfg.head_dim])))
        return self.g.op("Transpose", split, perm=[0, 2, 3, 1] if keys else [0, 2, 1, 3])

    def merge(self, x: str) -> str:
        """[B, H, T, dh] → [B, T, D]."""
        merged = self.g.op("Transpose", x, perm=[0, 2, 1, 3])
        return self.g.op("Reshape", merged, self.g.const(np.array([0, 0, self.cfg.embed_dim])))

    def scale(self) -> str:
        return self.g.const(np.array(1.0 / math.sqrt(self.cfg.head_dim), dtype=np.float32))

    def attention(self, x: str, prefix: str) -> str:
        g = self.g
        q = self.heads(self.linear(x, prefix + ".q"))
        k = self.heads(self.linear(x, prefix + ".k"), keys=True)
        v = self.heads(self.linear(x, prefix + ".v"))
        scores = g.op("Mul", g.op("MatMul", q, k), self.scale())
        if self.cfg.attention_bias:
            scores = g.op("Add", scores, self.w(prefix + ".token_bias"))                # + [H, T, T]
        probs = g.op("Softmax", scores, axis=-1)
        return self.linear(self.merge(g.op("MatMul", probs, v)), prefix + ".o")

    def attention_shared(self, board: str, moves: str, prefix: str) -> tuple[str, str]:
        """Board tokens attend among themselves; each move token to the board and itself."""
        g = self.g
        qb = self.heads(self.linear(board, prefix + ".q"))
        kb = self.heads(self.linear(board, prefix + ".k"), keys=True)
        vb = self.heads(self.linear(board, prefix + ".v"))
        qm = self.heads(self.linear(moves, prefix + ".q"))
        km = self.heads(self.linear(moves, prefix + ".k"))
        vm = self.heads(self.linear(moves, prefix + ".v"))
        scale = self.scale()
        board_probs = g.op("Softmax", g.op("Mul", g.op("MatMul", qb, kb), scale), axis=-1)
        board_out = g.op("MatMul", board_probs, vb)
        to_board = g.op("Mul", g.op("MatMul", qm, kb), scale)                      # [B, H, N, 78]
        to_self = g.op("Mul", g.op("ReduceSum", g.op("Mul", qm, km), g.const(np.array([-1])), keepdims=1),
                       scale)                                                        # [B, H, N, 1]
        probs = g.op("Softmax", g.op("Concat", to_board, to_self, axis=-1), axis=-1)
        last = g.const(np.array([-1]))
        p_board = g.op("Slice", probs, g.const(np.array([0])), last, last)
        p_self = g.op("Slice", probs, last, g.const(np.array([np.iinfo(np.int64).max])), last)
        move_out = g.op("Add", g.op("MatMul", p_board, vb), g.op("Mul", p_self, vm))
        return self.linear(self.merge(board_out), prefix + ".o"), self.linear(self.merge(move_out), prefix + ".o")

    def mlp(self, x: str, prefix: str) -> str:
        gate = self.silu(self.linear(x, prefix + ".gate"))
        return self.linear(self.g.op("Mul", gate, self.linear(x, prefix + ".up")), prefix + ".down")

    def block(self, x: str, i: int) -> str:
        p = f"blocks.{i}"
        x = self.g.op("Add", x, self.attention(self.layer_norm(x, p + ".ln1"), p + ".attn"))
        return self.g.op("Add", x, self.mlp(self.layer_norm(x, p + ".ln2"), p + ".mlp"))

    def embed(self, tokens: str, offset: int, length: int) -> str:
        g = self.g
        scaled = g.op("Mul", g.op("Gather", self.w("tok_embed.weight"), tokens, axis=0),
                      g.const(np.array(math.sqrt(self.cfg.embed_dim), dtype=np.float32)))
        pos = np.asarray(self.t["pos_embed"], dtype=np.float32)[offset:offset + length]
        return g.op("Add", scaled, g.const(pos, f"pos_embed[{offset}:{offset + length}]"))

    def head(self, x: str) -> str:
        return self.g.op("LogSoftmax", self.linear(x, "head", bias=True), axis=-1)

    def board_sequence(self, board: str) -> str:
        """BOS (0) then the 77 FEN tokens: [B, 78]."""
        g = self.g
        first = g.op("Slice", board, g.const(np.array([0])), g.const(np.array([1])), g.const(np.array([1])))
        bos = g.op("Mul", first, g.const(np.array(0)))
        return g.op("Concat", bos, board, axis=1)

    def token(self, x: str, index: int) -> str:
        """``x[:, index]`` of a [B, T, D] tensor: [B, D]."""
        return self.g.op("Gather", x, self.g.const(np.array(index)), axis=1)

    def build(self) -> str:
        cfg, g = self.cfg, self.g
        seq = self.board_sequence("board")
        length = 78
        if cfg.kind != ACTION_VALUE:
            x = self.embed(seq, 0, length)
            for i in range(cfg.num_layers):
                x = self.block(x, i)
            return self.head(self.layer_norm(self.token(x, length - 1), "ln_f"))
        if cfg.attention == BOARD_HEAD:
            return self.build_board_head(seq)
        if cfg.attention == SHARED_BOARD:
            return self.build_shared(seq)
        if cfg.attention != FULL:
            raise ValueError(f"unknown attention layout {cfg.attention!r}")
        # One 79-token sequence per (position, move): [B, N, 78] board copies, then the move.
        moves = g.op("Unsqueeze", "actions", g.const(np.array([2])))               # [B, N, 1]
        copies = g.op("Add", g.op("Unsqueeze", seq, g.const(np.array([1]))),        # [B, 1, 78] + [B, N, 1]·0
                      g.op("Mul", moves, g.const(np.array(0))))
        full = g.op("Reshape", g.op("Concat", copies, moves, axis=2), g.const(np.array([-1, length + 1])))
        x = self.embed(full, 0, length + 1)
        for i in range(cfg.num_layers):
            x = self.block(x, i)
        out = self.head(self.layer_norm(self.token(x, length), "ln_f"))             # [B·N, K]
        shape = g.op("Concat", g.op("Shape", "actions"), g.const(np.array([-1])), axis=0)
        return g.op("Reshape", out, shape)

    def build_shared(self, seq: str) -> str:
        if self.cfg.attention_bias:
            raise ValueError("the shared_board layout has no attention bias")
        board = self.embed(seq, 0, 78)
        moves = self.embed("actions", 78, 1)                                        # [B, N, D]
        for i in range(self.cfg.num_layers):
            p = f"blocks.{i}"
            a_board, a_moves = self.attention_shared(self.layer_norm(board, p + ".ln1"),
                                                     self.layer_norm(moves, p + ".ln1"), p + ".attn")
            board, moves = self.g.op("Add", board, a_board), self.g.op("Add", moves, a_moves)
            board = self.g.op("Add", board, self.mlp(self.layer_norm(board, p + ".ln2"), p + ".mlp"))
            moves = self.g.op("Add", moves, self.mlp(self.layer_norm(moves, p + ".ln2"), p + ".mlp"))
        return self.head(self.layer_norm(moves, "ln_f"))

    def build_board_head(self, seq: str) -> str:
        g = self.g
        x = self.embed(seq, 0, 78)
        for i in range(self.cfg.num_layers):
            x = self.block(x, i)
        states = self.layer_norm(x, "ln_f")                                          # [B, 78, D]
        src, dst, promo = (np.array(t, dtype=np.int64) for t in action_square_tokens())
        picked = []
        for table, prefix in ((src, "move_head.src"), (dst, "move_head.dst")):
            index = g.op("Unsqueeze", g.op("Gather", g.const(table, f"{prefix}.table"), "actions", axis=0),
                         g.const(np.array([2])))                                     # [B, N, 1]
            picked.append(g.op("GatherND", self.linear(states, prefix), index, batch_dims=1))  # [B, N, h]
        bos = g.op("Slice", states, g.const(np.array([0])), g.const(np.array([1])), g.const(np.array([1])))
        promo_rows = g.op("Gather", self.w("move_head.promo"),
                          g.op("Gather", g.const(promo, "move_head.promo_table"), "actions", axis=0), axis=0)
        total = g.op("Add", g.op("Add", picked[0], picked[1]), self.linear(bos, "move_head.glob"))
        total = g.op("Add", g.op("Add", total, promo_rows), self.w("move_head.bias"))
        hidden = self.silu(self.linear(self.silu(total), "move_head.hidden", bias=True))
        return self.head(hidden)


def graph_pieces(cfg: ModelConfig, tensors: Mapping[str, np.ndarray],
                 metadata: Mapping[str, str] | None = None) -> list[bytes]:
    """The serialised ONNX model of a transformer with these weights, in pieces."""
    net = _Net(cfg, tensors)
    net.g.op("Identity", net.build(), out="log_probs")
    inputs = [_value_info("board", _INT64, ["batch", 77])]
    if cfg.kind == ACTION_VALUE:
        inputs.append(_value_info("actions", _INT64, ["batch", "moves"]))
        out_dims: list[int | str] = ["batch", "moves", cfg.output_size]
    else:
        out_dims = ["batch", cfg.output_size]
    outputs = [_value_info("log_probs", _FLOAT, out_dims)]
    return net.g.model(inputs, outputs, dict(metadata or {}), f"neuralengine_{cfg.kind}_{cfg.attention}")


def graph_bytes(cfg: ModelConfig, tensors: Mapping[str, np.ndarray],
                metadata: Mapping[str, str] | None = None) -> bytes:
    """The serialised ONNX model as one ``bytes`` (for small models and tests)."""
    return b"".join(graph_pieces(cfg, tensors, metadata))


def write_graph(file: BinaryIO, cfg: ModelConfig, tensors: Mapping[str, np.ndarray],
                metadata: Mapping[str, str] | None = None) -> None:
    """Write the ONNX model to an open binary file, piece by piece."""
    for piece in graph_pieces(cfg, tensors, metadata):
        file.write(piece)
