"""Checkpoints are keyed by tree path: leaves land by name, and a state of another structure is
refused with the paths named."""

import numpy as np
import pytest

from asr.training.checkpoint import CheckpointMismatchError, Checkpointer


def test_leaves_are_restored_by_path_and_a_changed_structure_is_named(tmp_path):
  ckpt = Checkpointer(tmp_path / "ckpt")
  enc, joint = np.arange(6.0).reshape(2, 3), -np.arange(6.0).reshape(2, 3)
  ckpt.save(5, {"params": {"encoder": {"w": enc}, "joint": {"w": joint}}, "step": np.int32(5)},
            {"pipeline": {"epoch": 1}})
  ckpt.close()
  ckpt = Checkpointer(tmp_path / "ckpt")
  like = {"params": {"encoder": {"w": np.zeros((2, 3))}, "joint": {"w": np.zeros((2, 3))}},
          "step": np.int32(0)}
  state, data, step = ckpt.restore(like)
  assert step == 5 and data == {"pipeline": {"epoch": 1}} and int(state["step"]) == 5
  np.testing.assert_array_equal(state["params"]["encoder"]["w"], enc)
  np.testing.assert_array_equal(state["params"]["joint"]["w"], joint)
  # A module added between two of equal shape: by position, the joint's weights would have
  # loaded into it. By path, the run is refused and told what differs.
  grown = {"params": {"encoder": {"w": np.zeros((2, 3))}, "extra": {"w": np.zeros((2, 3))},
                      "joint": {"w": np.zeros((2, 3))}}, "step": np.int32(0)}
  with pytest.raises(CheckpointMismatchError, match="missing params/extra/w"):
    ckpt.restore(grown)
  resized = {"params": {"encoder": {"w": np.zeros((3, 3))}, "joint": {"w": np.zeros((2, 3))}},
             "step": np.int32(0)}
  with pytest.raises(CheckpointMismatchError,
                     match=r"params/encoder/w: stored \(2, 3\) float64, expected \(3, 3\)"):
    ckpt.restore(resized)
  with pytest.raises(CheckpointMismatchError, match="unexpected params/joint/w"):
    ckpt.restore({"params": {"encoder": {"w": np.zeros((2, 3))}}, "step": np.int32(0)})
  ckpt.close()
