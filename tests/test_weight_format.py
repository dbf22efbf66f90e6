"""The compressed weight format: exact round trip on random sparse tensors of awkward shapes,
bytes by hand on a small example, the byte count without packing, and bad input named."""

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.weight_format import pack, packed_bytes, unpack


def test_a_small_tensor_packs_as_worked_by_hand():
  q = np.array([[0, 3], [-2, 0], [0, 0], [5, 0]], np.int8)  # flat: 0 3 -2 0 0 0 5 0
  p = pack(q, scales=[0.5, 0.25], bits=8, block=8)
  # bitmap: bits 1, 2, 6 (little-endian) = 0b01000110 = 70; then 3, -2 (254), 5.
  assert p.data.tolist() == [70, 3, 254, 5]
  assert p.nbytes == 4 + 8 and packed_bytes(q, bits=8, block=8) == 12
  # int4: 3 and -2 (0xE) share a byte, low nibble first: 0xE3 = 227; then 5 alone.
  p4 = pack(q, scales=[0.5, 0.25], bits=4, block=8)
  assert p4.data.tolist() == [70, 227, 5] and p4.nbytes == 3 + 8
  assert packed_bytes(q, bits=4, block=8) == 11
  np.testing.assert_array_equal(unpack(p), q)
  np.testing.assert_array_equal(unpack(p4), q)
  # Against float32 (32 bytes) and dense int8 (8 + 8 bytes).


@settings(max_examples=60, deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=37),
       bits=st.sampled_from([4, 8]), block=st.sampled_from([32, 64, 128]),
       group=st.sampled_from([1, 2, 4]), density=st.floats(0.0, 1.0),
       seed=st.integers(0, 2**16))
def test_round_trip_is_exact(shape, bits, block, group, density, seed):
  rng = np.random.default_rng(seed)
  top = 2 ** (bits - 1)
  q = rng.integers(-top, top, shape) * (rng.random(shape) < density)
  scales = rng.random(shape[-1]).astype(np.float32)
  p = pack(q, scales, bits=bits, block=block, group=group)
  out = unpack(p)
  assert out.shape == q.shape and out.dtype == np.int8
  np.testing.assert_array_equal(out, q)
  np.testing.assert_array_equal(p.scales, scales)
  assert p.nbytes == packed_bytes(q, bits=bits, block=block, group=group)


def test_groups_of_four_pack_block_sparse_weights_as_worked_by_hand():
  # flat: [0 0 0 0] [1 0 -1 0] [0 0 0 0] [0 0 0 2] [0]*16: groups 1 and 3 present.
  q = np.zeros((8, 4), np.int8)
  q[1] = [1, 0, -1, 0]
  q[3] = [0, 0, 0, 2]
  p = pack(q, bits=8, block=32, group=4)
  assert p.data.tolist() == [0b1010, 1, 0, 255, 0, 0, 0, 0, 2]
  np.testing.assert_array_equal(unpack(p), q)
  # One bit per 4 weights against one per weight: 1 + 8 bytes against 4 + 3.
  assert packed_bytes(q, block=32, group=4, channels=0) == 9
  assert packed_bytes(q, block=32, channels=0) == 7


def test_zeros_cost_a_bit_each():
  rng = np.random.default_rng(0)
  q = rng.integers(1, 100, (256, 128))
  q[rng.random(q.shape) < 0.75] = 0
  nonzero = int((q != 0).sum())
  assert packed_bytes(q) == q.size // 8 + nonzero + 4 * 128
  assert packed_bytes(q) < 0.4 * (q.size + 4 * 128)  # against dense int8 at 75% zeros


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="layer/kernel: values -9..7 do not fit 4 bits"):
    pack(np.array([-9, 7]), bits=4, name="layer/kernel")
  with pytest.raises(ValueError, match="block=12"):
    pack(np.zeros(4, np.int8), block=12)
  with pytest.raises(ValueError, match="block=16 must be a positive multiple of 8 x group"):
    pack(np.zeros(4, np.int8), block=16, group=4)
  with pytest.raises(ValueError, match="expected integers"):
    pack(np.zeros(4, np.float32))
  with pytest.raises(ValueError, match="8- or 4-bit"):
    pack(np.zeros(4, np.int8), bits=2)
