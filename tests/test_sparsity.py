"""Gradual magnitude pruning: the ramp at its ends, masks against a brute-force NumPy ranking
(global, per layer, in blocks), pruned weights exactly zero through many optimizer steps, and
the masks carried and checkpointed in the train state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asr.training import transforms as T
from compression.size import model_size
from compression.sparsity import GradualMagnitudePruning, lamp_scores
from compression.weights import Selection
from tests.helpers import tiny_step


def layer_sparsity(params):
  return model_size(params)["sparsity_by_layer"]


def _params():
  _, state, *_ = tiny_step()
  return state["params"]


def test_the_ramp_is_exact_at_its_ends_and_cubic_between():
  t = GradualMagnitudePruning(target=0.8, initial=0.1, begin_step=100, end_step=300, every=7)
  assert float(t.sparsity(0)) == pytest.approx(0.1)
  assert float(t.sparsity(100)) == pytest.approx(0.1)
  assert float(t.sparsity(300)) == pytest.approx(0.8)
  assert float(t.sparsity(10_000)) == pytest.approx(0.8)
  # Zhu and Gupta's s_t = s_f + (s_i - s_f)(1 - (t - t0) / (n dt))^3
  assert float(t.sparsity(200)) == pytest.approx(0.8 + (0.1 - 0.8) * 0.5 ** 3, rel=1e-6)
  due = [s for s in range(0, 400) if bool(t.due(s))]
  assert due == list(range(100, 300, 7)) + [300]


def _lamp_brute_force(w):
  """LAMP's definition, one weight at a time: w_u^2 over the sum of w_v^2 for every v ranked at
  or after u (ascending |w|, ties by position)."""
  a = np.abs(np.asarray(w, np.float64)).reshape(-1)
  order = list(np.argsort(a, kind="stable"))
  out = np.zeros(a.size)
  for rank, u in enumerate(order):
    out[u] = a[u] ** 2 / sum(a[v] ** 2 for v in order[rank:])
  return out.reshape(np.shape(w))


def _brute_force_masks(params, names, share, scope):
  """NumPy: rank |w| (or LAMP scores) over all selected matrices (or per matrix), cut the
  smallest floor(share * n); ties broken by position in the concatenation, as documented."""
  flat = {n: np.asarray(w) for n, w in Selection().items(params)}
  groups = [[n] for n in names] if scope == "layer" else [names]
  score = _lamp_brute_force if scope == "lamp" else np.abs
  out = {}
  for group in groups:
    scores = np.concatenate([score(flat[n]).reshape(-1) for n in group])
    order = np.argsort(scores, kind="stable")
    keep = np.ones(scores.size, bool)
    keep[order[: int(np.floor(share * scores.size))]] = False
    at = 0
    for n in group:
      out[n] = keep[at: at + flat[n].size].reshape(flat[n].shape)
      at += flat[n].size
  return out


def test_lamp_scores_by_hand():
  # |w| = 1, 2, 3 (given out of order): squares 1, 4, 9, tails 14, 13, 9.
  got = np.asarray(lamp_scores(jnp.asarray([3.0, 1.0, 2.0])))
  np.testing.assert_allclose(got, [1.0, 1 / 14, 4 / 13], rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(lamp_scores(jnp.zeros(3))), 0.0)


def test_lamp_ignores_each_matrix_scale_where_global_magnitude_does_not():
  rng = np.random.default_rng(3)
  a, b = rng.standard_normal((2, 8, 16)).astype(np.float32)
  def cut(scope, scale):
    t = GradualMagnitudePruning(target=0.5, begin_step=0, end_step=0, scope=scope)
    params = {"a": {"kernel": jnp.asarray(a)}, "b": {"kernel": jnp.asarray(b * scale)}}
    _, masks = t.update(params, t.init(params), 0, {})
    return np.asarray(masks["a"]["kernel"]), np.asarray(masks["b"]["kernel"])
  for x, y in zip(cut("lamp", 1.0), cut("lamp", 1e-4)):
    np.testing.assert_array_equal(x, y)
  small_a, small_b = cut("global", 1e-4)
  assert small_a.all() and not small_b.any()   # raw magnitudes strip the small matrix
  lamp_a, lamp_b = cut("lamp", 1e-4)
  assert lamp_a.mean() < 1 and lamp_b.mean() > 0   # LAMP cuts from both, and keeps b's largest


def test_lamp_masks_equal_a_brute_force_ranking():
  # Small matrices of three scales: the brute force is quadratic in a matrix's size.
  rng = np.random.default_rng(4)
  params = {f"m{i}": {"kernel": jnp.asarray(rng.standard_normal(shape) * scale, jnp.float32)}
            for i, (shape, scale) in enumerate([((6, 10), 1.0), ((12, 5), 0.1), ((4, 4), 3.0)])}
  t = GradualMagnitudePruning(target=0.7, begin_step=0, end_step=0, scope="lamp")
  names = t.select.names(params)
  pruned, _ = jax.jit(t.update)(params, t.init(params), 0, {})
  expected = _brute_force_masks(params, names, 0.7, "lamp")
  got = dict(t.select.items(pruned))
  for n in names:
    np.testing.assert_array_equal(np.asarray(got[n]) != 0, expected[n], err_msg=n)
  assert sum(int((np.asarray(w) == 0).sum()) for w in got.values()) == int(0.7 * 136)
  assert all(np.asarray(w).any() for w in got.values())   # every matrix keeps its largest


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_masks_equal_a_brute_force_ranking(scope):
  params = _params()
  t = GradualMagnitudePruning(target=0.6, begin_step=0, end_step=0, scope=scope)
  names = t.select.names(params)
  assert "encoder/layers/0/input/kernel" in names and not any("ctc_head" in n for n in names)
  pruned, masks = jax.jit(t.update)(params, t.init(params), 0, {})
  expected = _brute_force_masks(params, names, 0.6, scope)
  got = dict(t.select.items(pruned))
  for n in names:
    np.testing.assert_array_equal(np.asarray(got[n]) != 0, expected[n], err_msg=n)
  sparsity = layer_sparsity(pruned)
  if scope == "layer":
    sizes = {n: np.asarray(got[n]).size for n in names}
    assert all(sparsity[n] == np.floor(0.6 * sizes[n]) / sizes[n] for n in names)
  else:
    total = sum(np.asarray(got[n]).size for n in names)
    zeros = sum(int((np.asarray(got[n]) == 0).sum()) for n in names)
    assert zeros == int(np.floor(0.6 * total))
    assert len(set(round(v, 3) for v in sparsity.values())) > 1   # global: layers differ


def test_blocks_are_cut_whole_by_their_mean_magnitude():
  w = np.random.default_rng(1).standard_normal((6, 10)).astype(np.float32)
  params = {"layer": {"kernel": jnp.asarray(w)}}
  t = GradualMagnitudePruning(target=0.5, begin_step=0, end_step=0, block=(2, 4), scope="layer")
  pruned, _ = t.update(params, t.init(params), 0, {})
  got = np.asarray(pruned["layer"]["kernel"])
  # Blocks of 2 x 4, the last column of blocks partial (2 x 2): 3 x 3 blocks, 4 of them cut.
  scores = np.array([[np.abs(w[r:r + 2, c:c + 4]).mean() for c in (0, 4, 8)] for r in (0, 2, 4)])
  cut = np.argsort(scores.reshape(-1), kind="stable")[:4]
  for b in range(9):
    r, c = divmod(b, 3)
    block = got[2 * r: 2 * r + 2, 4 * c: 4 * c + 4]
    if b in cut:
      assert not block.any(), (r, c)
    else:
      np.testing.assert_array_equal(block, w[2 * r: 2 * r + 2, 4 * c: 4 * c + 4])


def test_pruned_weights_stay_exactly_zero_through_training_and_the_ramp_is_followed():
  transforms = T.build_transforms({"prune": {
      "factory": "compression.sparsity:gradual_magnitude_pruning", "target": 0.75,
      "begin_step": 2, "end_step": 8, "every": 3, "scope": "layer"}})
  _, state, step, batch, _ = tiny_step(transforms=transforms)
  t = transforms[0][1]
  step = jax.jit(step)
  names = t.select.names(state["params"])
  zero_before = None
  for s in range(14):
    state, _ = step(state, batch)
    kernels = dict(t.select.items(state["params"]))
    masks = dict(t.select.items(state["transforms"]["prune"]))
    for n in names:   # pruned weights are exactly zero, unpruned ones are not
      k, m = np.asarray(kernels[n]), np.asarray(masks[n])
      assert not k[~m].any() and (k[m] != 0).all(), (s, n)
    # The share of zeros is the ramp's value at the last mask update (floor per matrix).
    last_due = max([d for d in range(s + 1) if bool(t.due(d))], default=None)
    want = 0.0 if last_due is None else float(t.sparsity(last_due))
    for n in names:
      size = np.asarray(kernels[n]).size
      assert layer_sparsity(state["params"])[n] == np.floor(np.float32(want) * size) / size
    zeros = {n: np.asarray(kernels[n]) == 0 for n in names}
    if zero_before is not None:   # once cut, always cut
      assert all((zeros[n] | ~zero_before[n]).all() for n in names)
    zero_before = zeros
  assert all(v == pytest.approx(0.75, abs=0.01) for v in layer_sparsity(state["params"]).values())


def test_bad_options_and_a_selection_of_nothing_are_named():
  with pytest.raises(ValueError, match=r"initial \(0.5\) <= target \(0.3\)"):
    GradualMagnitudePruning(target=0.3, initial=0.5, begin_step=0, end_step=1)
  with pytest.raises(ValueError, match="scope='row'"):
    GradualMagnitudePruning(target=0.3, begin_step=0, end_step=1, scope="row")
  t = GradualMagnitudePruning(target=0.3, begin_step=0, end_step=1, include="nothing_here")
  with pytest.raises(ValueError, match="no weight matrix matches include='nothing_here'"):
    t.init(_params())


def test_model_size_by_hand():
  params = {"enc": {"kernel": jnp.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]),   # 2 x 3, 4 zeros
                    "bias": jnp.zeros(3)},
            "embed": {"embedding": jnp.ones((5, 2))},                          # not a kernel
            "ctc_head": {"kernel": jnp.ones((3, 7))}}                          # not on device
  size = model_size(params)
  assert size["num_params"] == 6 + 3 + 10 and size["num_weights"] == 6
  assert size["sparsity"] == pytest.approx(4 / 6)
  assert size["sparsity_by_layer"] == {"enc/kernel": pytest.approx(4 / 6)}
  assert size["model_bytes_float32"] == 4 * 19
  assert size["model_bytes_int8"] == 4 * 13 + 6 + 4 * 3            # weights, then 3 scales
  assert size["model_bytes_int8_sparse"] == 4 * 13 + 2 + 1 + 4 * 3  # 2 non-zeros, 1-byte bitmap
