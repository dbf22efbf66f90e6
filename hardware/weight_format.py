"""The compressed weight format the edge processor receives: low-bit non-zeros and presence
bitmaps, block by block, decompressed on chip.

A quantized weight tensor (integers of `bits` bits, one scale per output channel) is flattened
in row-major order and cut into blocks of `block` weights (a multiple of 8 x `group`; the last
block is padded with zeros). Each block is stored as

  [ presence bitmap: block / group / 8 bytes, bit i (little-endian within a byte) = group i
    (weights i * group .. (i + 1) * group - 1) holds a non-zero ]
  [ the present groups' values, in order: 1 byte each (int8), or two to a byte (int4: the
    first value in the low nibble, two's complement) ]

`group=1` marks every weight (the format for unstructured sparsity); `group=4` marks runs of
4 adjacent output units of one input row, what `compression.sparsity`'s block pruning
(`block=(1, 4)`) cuts together: a bit costs a quarter as much per weight, and a zero inside a
present group is stored as a value.

followed, once per tensor, by the scales (float32, one per output channel). A decompressor reads
a block's bitmap, counts its bits and knows how many value bytes follow, so blocks are
self-delimiting and stream in order; the processor's compute units see the bitmap too and skip
the zeros. Bytes per tensor: bitmaps + values + scales, the values of a block padded to whole
bytes (int4 with an odd count wastes a nibble).

The seed's processor (Amazon's AZ neural edge processor) is described only as receiving weights
"in a compressed form that exploits low-bit values and zeros"; this bitmap layout is ours, the
simplest format with an exact round trip and a cost of 1 bit a weight for the zeros it removes
(`compression.size`'s `model_bytes_int8_sparse` counts the same layout for int8 with one block a
tensor; blocks of `block` weights pad each tensor to whole blocks).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PackedTensor:
  shape: tuple[int, ...]
  bits: int                # 8 or 4
  block: int               # weights per block, a multiple of 8 x group
  data: np.ndarray         # uint8: the blocks, each bitmap then values
  scales: np.ndarray       # float32 [out]: one per output channel (the last axis)
  group: int = 1           # weights per presence bit

  @property
  def nbytes(self) -> int:
    return int(self.data.nbytes + self.scales.nbytes)


def _check(q: np.ndarray, bits: int, block: int, name: str, group: int = 1) -> None:
  if bits not in (4, 8):
    raise ValueError(f"{name}: the format stores 8- or 4-bit integers, not {bits}")
  if group < 1:
    raise ValueError(f"{name}: group={group} must be at least 1")
  if block <= 0 or block % (8 * group):
    raise ValueError(f"{name}: block={block} must be a positive multiple of 8 x group "
                     f"({8 * group})")
  if not np.issubdtype(q.dtype, np.integer):
    raise ValueError(f"{name}: expected integers, got {q.dtype}")
  lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
  if q.size and (q.min() < lo or q.max() > hi):
    raise ValueError(f"{name}: values {q.min()}..{q.max()} do not fit {bits} bits ({lo}..{hi})")


def _present(flat: np.ndarray, group: int) -> np.ndarray:
  """`[blocks, block]` -> bool `[blocks, block / group]`: which groups hold a non-zero."""
  return (flat.reshape(flat.shape[0], -1, group) != 0).any(axis=2)


def pack(q, scales=None, *, bits: int = 8, block: int = 64, group: int = 1,
         name: str = "tensor") -> PackedTensor:
  """Integers `q [..., out]` of `bits` bits (any integer dtype) and `scales [out]` (default
  none stored) -> the packed tensor."""
  q = np.asarray(q)
  _check(q, bits, block, name, group)
  flat = q.reshape(-1).astype(np.int8)
  flat = np.pad(flat, (0, -flat.size % block)).reshape(-1, block)   # [blocks, block]
  present = _present(flat, group)
  bitmaps = np.packbits(present, axis=1, bitorder="little")         # [blocks, block / group / 8]
  chunks = []
  for bitmap, values, keep in zip(bitmaps, flat, present):
    nonzero = values[np.repeat(keep, group)]
    if bits == 4:
      nibbles = (nonzero.astype(np.uint8) & 0x0F)
      nibbles = np.pad(nibbles, (0, nibbles.size % 2))
      nonzero = (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8)
    chunks += [bitmap, nonzero.view(np.uint8)]
  data = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
  scales = np.zeros(0, np.float32) if scales is None else np.asarray(scales, np.float32)
  return PackedTensor(tuple(q.shape), bits, block, data.astype(np.uint8), scales, group)


def unpack(p: PackedTensor) -> np.ndarray:
  """The packed tensor -> its integers `[shape]` int8 (block by block, as a decompressor
  streams them)."""
  size = int(np.prod(p.shape))
  blocks = -(-size // p.block)
  out = np.zeros((blocks, p.block), np.int8)
  pos = 0
  bitmap = p.block // p.group // 8
  for b in range(blocks):
    present = np.unpackbits(p.data[pos:pos + bitmap], bitorder="little").astype(bool)
    present = np.repeat(present, p.group)
    pos += bitmap
    n = int(present.sum())
    if p.bits == 8:
      values = p.data[pos:pos + n].view(np.int8)
      pos += n
    else:
      raw = p.data[pos:pos + (n + 1) // 2]
      pos += (n + 1) // 2
      nibbles = np.stack([raw & 0x0F, raw >> 4], axis=1).reshape(-1)[:n].astype(np.int8)
      values = np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)
    out[b, present] = values
  if pos != p.data.size:
    raise ValueError(f"packed data holds {p.data.size} bytes, its blocks {pos}")
  return out.reshape(-1)[:size].reshape(p.shape)


def packed_bytes(q, *, bits: int = 8, block: int = 64, group: int = 1,
                 channels: int | None = None) -> int:
  """What `pack(q, scales, bits=bits, block=block, group=group).nbytes` is, counted without
  packing: `channels` scales (default the last axis), per block a bitmap and its present
  groups' values."""
  q = np.asarray(q)
  channels = q.shape[-1] if channels is None else channels
  padded = np.pad(q.reshape(-1), (0, -q.size % block)).reshape(-1, block)
  stored = _present(padded, group).sum(axis=1) * group
  values = stored if bits == 8 else (stored + 1) // 2
  return int(padded.shape[0] * block // (8 * group) + values.sum() + 4 * channels)
