"""Base-128 varints, as protobuf and DeepMind's bag files write lengths and integers."""

from __future__ import annotations


def encode_varint(value: int) -> bytes:
    """The varint of ``value``; a negative value is written as its 64-bit two's complement (ten bytes),
    as protobuf writes a negative int64."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
