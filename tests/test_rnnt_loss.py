"""The RNN-T loss against brute force, an independent NumPy DP, finite differences and autodiff."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asr.losses import rnnt_loss, rnnt_loss_from_log_probs, rnnt_loss_lean
from asr.losses.rnnt import arc_log_probs, _nll_plain

jax.config.update("jax_enable_x64", False)


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - np.logaddexp.reduce(x, axis=-1, keepdims=True)


def brute_force_nll(logits, labels, blank=0):
  """-log sum over every alignment (all orderings of T blanks and U labels ending in a blank)."""
  lp = _log_softmax(logits)
  t_max, u_max = lp.shape[0], len(labels)
  total = []
  for label_slots in itertools.combinations(range(t_max - 1 + u_max), u_max):
    t = u = 0
    score = 0.0
    for step in range(t_max - 1 + u_max):
      if step in label_slots:
        score += lp[t, u, labels[u]]
        u += 1
      else:
        score += lp[t, u, blank]
        t += 1
    score += lp[t, u, blank]  # the final blank out of (T-1, U)
    total.append(score)
  return -np.logaddexp.reduce(total)


def numpy_dp_nll(logits, labels, blank=0):
  """The textbook alpha recursion, cell by cell, in float64 (Graves 2012, eq. 16)."""
  lp = _log_softmax(logits)
  t_max, u_max = lp.shape[0], len(labels)
  alpha = np.full((t_max, u_max + 1), -np.inf)
  alpha[0, 0] = 0.0
  for t in range(t_max):
    for u in range(u_max + 1):
      if t == u == 0:
        continue
      terms = []
      if t > 0:
        terms.append(alpha[t - 1, u] + lp[t - 1, u, blank])
      if u > 0:
        terms.append(alpha[t, u - 1] + lp[t, u - 1, labels[u - 1]])
      alpha[t, u] = np.logaddexp.reduce(terms)
  return -(alpha[t_max - 1, u_max] + lp[t_max - 1, u_max, blank])


def _random_batch(rng, b, t, u, v, scale=1.0):
  logits = (rng.standard_normal((b, t, u + 1, v)) * scale).astype(np.float32)
  labels = rng.integers(1, v, (b, u)).astype(np.int32)
  t_len = rng.integers(1, t + 1, b).astype(np.int32)
  u_len = rng.integers(0, u + 1, b).astype(np.int32)
  t_len[0], u_len[0] = t, u  # one full-size utterance
  return logits, labels, t_len, u_len


@pytest.mark.parametrize("t, u", [(1, 0), (1, 1), (1, 3), (2, 0), (3, 2), (4, 4), (2, 5), (5, 3)])
def test_equals_brute_force_enumeration(t, u):
  rng = np.random.default_rng(t * 10 + u)
  logits = rng.standard_normal((1, t, u + 1, 5)).astype(np.float32)
  labels = rng.integers(1, 5, (1, u)).astype(np.int32)
  got = rnnt_loss(logits, labels, np.array([t]), np.array([u]))
  np.testing.assert_allclose(float(got[0]), brute_force_nll(logits[0], labels[0]), rtol=1e-5)


def test_equals_numpy_dp_on_padded_batches_with_variable_lengths():
  rng = np.random.default_rng(0)
  for _ in range(5):
    logits, labels, t_len, u_len = _random_batch(rng, 6, 9, 7, 11, scale=2.0)
    got = np.asarray(rnnt_loss(logits, labels, t_len, u_len))
    ref = [numpy_dp_nll(logits[b, : t_len[b], : u_len[b] + 1], labels[b, : u_len[b]])
           for b in range(len(t_len))]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


def test_padding_changes_nothing():
  rng = np.random.default_rng(1)
  logits, labels, t_len, u_len = _random_batch(rng, 4, 6, 4, 7)
  base = rnnt_loss(logits, labels, t_len, u_len)
  big = rng.standard_normal((4, 10, 8, 7)).astype(np.float32) * 50  # junk in the padding
  big[:, :6, :5] = logits
  big_labels = rng.integers(1, 7, (4, 7)).astype(np.int32)
  big_labels[:, :4] = labels
  padded = rnnt_loss(big, big_labels, t_len, u_len)
  np.testing.assert_allclose(np.asarray(padded), np.asarray(base), rtol=1e-6)
  g_base = jax.grad(lambda x: rnnt_loss(x, labels, t_len, u_len).sum())(logits)
  g_pad = jax.grad(lambda x: rnnt_loss(x, big_labels, t_len, u_len).sum())(big)
  np.testing.assert_allclose(np.asarray(g_pad[:, :6, :5]), np.asarray(g_base), atol=1e-6)
  mask = np.zeros(big.shape, bool)
  for b in range(4):
    mask[b, : t_len[b], : u_len[b] + 1] = True
  assert not np.any(np.asarray(g_pad)[~mask])


def test_gradient_equals_autodiff_through_the_plain_scan():
  rng = np.random.default_rng(2)
  logits, labels, t_len, u_len = _random_batch(rng, 5, 12, 6, 9, scale=3.0)
  weights = jnp.asarray(rng.uniform(0.5, 2.0, 5).astype(np.float32))  # a non-uniform cotangent

  def plain(x):
    blank, label = arc_log_probs(x, labels, 0)
    return (_nll_plain(blank, label, t_len, u_len) * weights).sum()
  custom = jax.grad(lambda x: (rnnt_loss(x, labels, t_len, u_len) * weights).sum())(logits)
  np.testing.assert_allclose(np.asarray(custom), np.asarray(jax.grad(plain)(logits)), rtol=1e-5,
                             atol=1e-5)


def test_gradient_equals_finite_differences():
  rng = np.random.default_rng(3)
  blank = jnp.asarray(np.log(rng.uniform(0.05, 0.9, (2, 4, 4))), jnp.float32)
  label = jnp.asarray(np.log(rng.uniform(0.05, 0.9, (2, 4, 3))), jnp.float32)
  t_len, u_len = np.array([4, 3]), np.array([3, 2])
  f = jax.jit(lambda bl, la: rnnt_loss_from_log_probs(bl, la, t_len, u_len).sum())
  g_blank, g_label = jax.grad(f, argnums=(0, 1))(blank, label)
  eps = 1e-2
  for arr, grad, which in ((blank, g_blank, 0), (label, g_label, 1)):
    for idx in np.ndindex(arr.shape):
      bump = jnp.zeros(arr.shape).at[idx].set(eps)
      args_p = [blank, label]
      args_m = [blank, label]
      args_p[which] = arr + bump
      args_m[which] = arr - bump
      fd = (f(*args_p) - f(*args_m)) / (2 * eps)
      assert abs(float(fd) - float(grad[idx])) < 2e-3, (which, idx, float(fd), float(grad[idx]))


def numpy_logit_gradient(logits, labels, blank=0):
  """d(-log P)/d logits from the lattice's posteriors, float64 (Graves 2012, eq. 20): at cell
  (t, u), occupancy * softmax minus the posterior of the blank arc on the blank and of the
  label arc on y[u], where a cell's occupancy is exp(alpha + beta - log P)."""
  lp = _log_softmax(logits)
  t_max, u_max = lp.shape[0], len(labels)
  alpha = np.full((t_max, u_max + 1), -np.inf)
  beta = np.full((t_max, u_max + 1), -np.inf)
  alpha[0, 0] = 0.0
  for t in range(t_max):
    for u in range(u_max + 1):
      terms = [alpha[t, u]] if t == u == 0 else []
      if t > 0:
        terms.append(alpha[t - 1, u] + lp[t - 1, u, blank])
      if u > 0:
        terms.append(alpha[t, u - 1] + lp[t, u - 1, labels[u - 1]])
      alpha[t, u] = np.logaddexp.reduce(terms)
  for t in reversed(range(t_max)):
    for u in reversed(range(u_max + 1)):
      terms = [lp[t, u, blank]] if (t, u) == (t_max - 1, u_max) else []
      if t < t_max - 1:
        terms.append(lp[t, u, blank] + beta[t + 1, u])
      if u < u_max:
        terms.append(lp[t, u, labels[u]] + beta[t, u + 1])
      beta[t, u] = np.logaddexp.reduce(terms)
  log_p = beta[0, 0]
  grad = np.exp(alpha + beta - log_p)[..., None] * np.exp(lp)
  for t in range(t_max):
    for u in range(u_max + 1):
      if t < t_max - 1 or u == u_max:
        after = beta[t + 1, u] if t < t_max - 1 else 0.0
        grad[t, u, blank] -= np.exp(alpha[t, u] + lp[t, u, blank] + after - log_p)
      if u < u_max:
        grad[t, u, labels[u]] -= np.exp(alpha[t, u] + lp[t, u, labels[u]] + beta[t, u + 1]
                                        - log_p)
  return grad


def test_gradient_of_logits_equals_the_lattice_posteriors():
  rng = np.random.default_rng(4)
  logits, labels, t_len, u_len = _random_batch(rng, 3, 5, 3, 6, scale=2.0)
  g = np.asarray(jax.grad(lambda x: rnnt_loss(x, labels, t_len, u_len).sum())(logits))
  for b in range(3):
    t, u = t_len[b], u_len[b]
    ref = numpy_logit_gradient(logits[b, :t, : u + 1], labels[b, :u])
    np.testing.assert_allclose(g[b, :t, : u + 1], ref, atol=1e-5)
    assert not g[b, t:].any() and not g[b, :, u + 1:].any()


def test_label_longer_than_frames_is_fine_and_t1_u0():
  rng = np.random.default_rng(5)
  logits = rng.standard_normal((2, 2, 7, 4)).astype(np.float32)
  labels = rng.integers(1, 4, (2, 6)).astype(np.int32)
  got = np.asarray(rnnt_loss(logits, labels, np.array([2, 1]), np.array([6, 0])))
  ref = [numpy_dp_nll(logits[0], labels[0]), numpy_dp_nll(logits[1, :1, :1], labels[1, :0])]
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  # T=1, U=0: the loss is just -log P(blank).
  np.testing.assert_allclose(got[1], -_log_softmax(logits[1, 0, 0])[0], rtol=1e-5)


def test_long_utterance_stays_finite():
  rng = np.random.default_rng(6)
  b, t, u = 1, 2000, 300
  blank = jnp.asarray(np.log(rng.uniform(0.01, 1, (b, t, u + 1))), jnp.float32)
  label = jnp.asarray(np.log(rng.uniform(0.01, 1, (b, t, u))), jnp.float32)
  loss, grads = jax.value_and_grad(
      lambda bl, la: rnnt_loss_from_log_probs(bl, la, [t], [u]).sum(), argnums=(0, 1))(blank, label)
  assert np.isfinite(float(loss)) and float(loss) > 0
  assert all(np.isfinite(np.asarray(g)).all() for g in grads)


def test_bfloat16_inputs_are_accumulated_in_float32():
  rng = np.random.default_rng(7)
  logits, labels, t_len, u_len = _random_batch(rng, 3, 20, 8, 12, scale=2.0)
  bf = jnp.asarray(logits, jnp.bfloat16)
  got = rnnt_loss(bf, labels, t_len, u_len)
  assert got.dtype == jnp.float32
  # Against the float64 DP on the same bfloat16-rounded logits: a sum held in bfloat16 (8
  # mantissa bits) would be off by about 0.4% of losses near 100, 100x the tolerance.
  rounded = np.asarray(bf.astype(jnp.float32), np.float64)
  ref = [numpy_dp_nll(rounded[b, : t_len[b], : u_len[b] + 1], labels[b, : u_len[b]])
         for b in range(3)]
  np.testing.assert_allclose(np.asarray(got), ref, rtol=3e-5)
  g = jax.grad(lambda x: rnnt_loss(x, labels, t_len, u_len).sum())(bf)
  assert g.dtype == jnp.bfloat16 and np.isfinite(np.asarray(g, np.float32)).all()


@pytest.mark.parametrize("chunk", [1, 4, 7, 32])
def test_lean_path_equals_full_logits_path_with_gradients(chunk):
  rng = np.random.default_rng(8)
  b, t, u, d, v = 3, 11, 5, 6, 9
  enc = jnp.asarray(rng.standard_normal((b, t, d)), jnp.float32)
  pred = jnp.asarray(rng.standard_normal((b, u + 1, d)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((d, v)), jnp.float32)
  labels = rng.integers(1, v, (b, u)).astype(np.int32)
  t_len, u_len = np.array([11, 7, 2]), np.array([5, 0, 3])

  def joint(w, e, p):
    return jnp.tanh(e[:, :, None, :] + p[:, None, :, :]) @ w

  def full(w, e, p):
    return rnnt_loss(joint(w, e, p), labels, t_len, u_len).sum()

  def lean(w, e, p):
    return rnnt_loss_lean(e, p, lambda ec, pc: joint(w, ec, pc), labels, t_len, u_len,
                          chunk=chunk).sum()
  v_full, g_full = jax.value_and_grad(full, argnums=(0, 1, 2))(w, enc, pred)
  v_lean, g_lean = jax.value_and_grad(lean, argnums=(0, 1, 2))(w, enc, pred)
  np.testing.assert_allclose(float(v_lean), float(v_full), rtol=1e-5)
  for a, b_ in zip(g_lean, g_full):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b_), atol=1e-5)


def test_reductions():
  rng = np.random.default_rng(9)
  logits, labels, t_len, u_len = _random_batch(rng, 4, 5, 3, 6)
  per = np.asarray(rnnt_loss(logits, labels, t_len, u_len))
  assert np.isclose(float(rnnt_loss(logits, labels, t_len, u_len, reduction="sum")), per.sum())
  assert np.isclose(float(rnnt_loss(logits, labels, t_len, u_len, reduction="mean")), per.mean())
  assert np.isclose(float(rnnt_loss(logits, labels, t_len, u_len, reduction="mean_per_label")),
                    per.sum() / u_len.sum())


def test_padding_rows_with_no_frames_give_zero_loss_and_gradient():
  rng = np.random.default_rng(10)
  logits, labels, t_len, u_len = _random_batch(rng, 3, 6, 4, 7)
  t_len[1], u_len[1] = 0, 0  # a batch-padding row
  loss, g = jax.value_and_grad(lambda x: rnnt_loss(x, labels, t_len, u_len).sum())(logits)
  assert np.isfinite(float(loss))
  per = np.asarray(rnnt_loss(logits, labels, t_len, u_len))
  assert per[1] == 0 and not np.asarray(g)[1].any() and np.isfinite(np.asarray(g)).all()
  np.testing.assert_allclose(per[0], numpy_dp_nll(logits[0], labels[0]), rtol=1e-5)
