"""Bytes the hardware moves: sub-byte packing and the exact packed size of quantized weights.

Layout (K x N weights, K the reduction axis): elements are packed along K within each output column,
so a column's K elements are contiguous bytes; 4-bit elements go two per byte, element 2i in the low
nibble and 2i+1 in the high nibble (an odd K leaves the last high nibble 0). int4 codes are two's
complement nibbles; E2M1 codes are the float4_e2m1fn bit patterns. Scales follow the elements as a
separate array: fp32 (4 bytes) for integer formats, one E8M0 byte per MX block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npusim.errors import NumericsError
from npusim.numerics.intq import IntWeights
from npusim.numerics.mx import E8M0, MX_BLOCK, MX_FORMATS, MXTensor


@dataclass(frozen=True)
class WeightLayout:
    name: str
    elem_bits: int
    group_k: int | None  # K elements per scale; None: one scale per output channel; 0: no scale
    scale_bytes: int


LAYOUTS = {
    lay.name: lay
    for lay in (
        WeightLayout("bf16", 16, 0, 0),
        WeightLayout("int8", 8, None, 4),
        WeightLayout("int8-g128", 8, 128, 4),
        WeightLayout("int4-g128", 4, 128, 4),
        WeightLayout("mxfp4", 4, MX_BLOCK, 1),
        WeightLayout("mxfp8", 8, MX_BLOCK, 1),
    )
}


def layout(name: str) -> WeightLayout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise NumericsError(f"unknown weight format {name!r} (known: {', '.join(LAYOUTS)})") from None


def packed_nbytes(fmt: str, k: int, n: int) -> int:
    """Exact bytes of a packed K x N weight tile in format `fmt`: elements plus scales.

    elements: n * ceil(k * bits / 8); scales: n * scale_bytes per channel, or n * ceil(k / group_k) *
    scale_bytes per group / MX block (a tile is assumed to start on a group boundary).
    """
    lay = layout(fmt)
    if k < 0 or n < 0:
        raise NumericsError(f"tile shape must be non-negative, got {k} x {n}")
    elems = n * -(-k * lay.elem_bits // 8)
    if lay.group_k == 0:
        scales = 0
    elif lay.group_k is None:
        scales = n
    else:
        scales = n * -(-k // lay.group_k)
    return elems + scales * lay.scale_bytes


@dataclass(frozen=True, eq=False)
class PackedTensor:
    fmt: str
    shape: tuple[int, int]  # logical K x N
    data: np.ndarray  # uint8, elements packed along K
    scales: np.ndarray  # uint8 bytes of the scales

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.scales.nbytes)


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """Pack 4-bit codes (low nibble of each uint8) two per byte along axis 0: (k, n) -> (ceil(k/2), n)."""
    c = np.asarray(codes, dtype=np.uint8) & 0x0F
    if c.shape[0] % 2:
        c = np.concatenate([c, np.zeros((1,) + c.shape[1:], dtype=np.uint8)], axis=0)
    return (c[0::2] | (c[1::2] << 4)).astype(np.uint8)


def unpack_nibbles(packed: np.ndarray, k: int) -> np.ndarray:
    """Inverse of pack_nibbles: (ceil(k/2), n) bytes -> (k, n) 4-bit codes as uint8."""
    p = np.asarray(packed, dtype=np.uint8)
    out = np.empty((p.shape[0] * 2,) + p.shape[1:], dtype=np.uint8)
    out[0::2] = p & 0x0F
    out[1::2] = p >> 4
    return out[:k]


def pack_int_weights(w: IntWeights) -> PackedTensor:
    fmt = w.fmt
    layout(fmt)  # only the layouts the hardware moves
    data = pack_nibbles(w.q.view(np.uint8)) if w.bits == 4 else w.q.view(np.uint8).copy()
    return PackedTensor(fmt, w.q.shape, data, np.ascontiguousarray(w.scale, dtype=np.float32).view(np.uint8))


def unpack_int_weights(p: PackedTensor) -> IntWeights:
    lay = layout(p.fmt)
    k, n = p.shape
    if lay.elem_bits == 4:
        nib = unpack_nibbles(p.data, k).astype(np.int16)
        q = np.where(nib >= 8, nib - 16, nib).astype(np.int8)  # two's complement nibble -> int8
    else:
        q = p.data.view(np.int8).copy()
    scale = p.scales.view(np.float32).copy()
    if lay.group_k is not None:
        scale = scale.reshape(k // lay.group_k, n)
    return IntWeights(q=q, scale=scale, bits=lay.elem_bits, group_k=lay.group_k)


def pack_mx(t: MXTensor) -> PackedTensor:
    """Pack K x N MX weights (blocks along K, axis 0)."""
    if t.axis != 0:
        raise NumericsError("pack_mx packs K x N weights blocked along axis 0")
    codes = t.elems.view(np.uint8)
    data = pack_nibbles(codes) if t.fmt.elem_bits == 4 else codes.copy()
    return PackedTensor(t.fmt.name, t.elems.shape, data, t.scales.view(np.uint8).copy())


def unpack_mx(p: PackedTensor) -> MXTensor:
    fmt = MX_FORMATS.get(p.fmt)
    if fmt is None:
        raise NumericsError(f"{p.fmt!r} is not an MX format")
    k, _ = p.shape
    codes = unpack_nibbles(p.data, k) if fmt.elem_bits == 4 else p.data
    return MXTensor(codes.view(fmt.elem_dtype).copy(), p.scales.view(E8M0).copy(), fmt, 0)
