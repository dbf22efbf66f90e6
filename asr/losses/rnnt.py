"""The RNN-T (transducer) loss in JAX: log space, anti-diagonal scans, a custom VJP, a lean path.

Graves (2012), "Sequence Transduction with Recurrent Neural Networks". For an utterance with `T`
encoder frames and `U` labels the lattice has cells `(t, u)`, `0 <= t < T`, `0 <= u <= U`;
from `(t, u)` a blank moves to `(t + 1, u)` and label `y[u]` moves to `(t, u + 1)`; the last step
is the blank out of `(T - 1, U)`. With `alpha(0, 0) = 0`,

  alpha(t, u) = logaddexp(alpha(t-1, u) + blank(t-1, u), alpha(t, u-1) + label(t, u-1))
  log P(y | x) = alpha(T-1, U) + blank(T-1, U)

Cells on one anti-diagonal `n = t + u` depend only on diagonal `n - 1`, so one `lax.scan` step
computes a whole diagonal for the whole batch (as in apple/axlearn's transducer). The backward
pass is a second scan over the diagonals in reverse that carries beta and writes the gradient
of every arc directly, `d(-log P)/d arc = -exp(alpha(src) + arc + beta(dst) - log P)`, so
autodiff never stores the scan's intermediates.

Entry points:
  rnnt_loss(logits, labels, logit_lengths, label_lengths)      full `[B, T, U+1, V]` logits
  rnnt_loss_from_log_probs(blank, label, ...)                   the lattice's arc weights
  rnnt_loss_lean(encoded, predicted, joint_fn, labels, ...)      chunked joint: never holds
                                                                 `[B, T, U+1, V]`
All return per-utterance negative log-likelihoods `[B]` (float32, whatever the input dtype).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from asr.arrays import NEG_INF


def _skew(x: jax.Array, num_diagonals: int) -> jax.Array:
  """`x [B, T, W]` -> `[N, B, W]` with `out[n, b, u] = x[b, n - u, u]` (NEG_INF off the lattice)."""
  b, t, w = x.shape
  n = jnp.arange(num_diagonals)[:, None]
  u = jnp.arange(w)[None, :]
  src_t = n - u
  valid = (src_t >= 0) & (src_t < t)
  gathered = x[:, jnp.clip(src_t, 0, t - 1), u]  # [B, N, W]
  return jnp.where(valid[None], gathered, NEG_INF).transpose(1, 0, 2)


def _unskew(d: jax.Array, t: int) -> jax.Array:
  """Inverse of `_skew`: `d [N, B, W]` -> `[B, T, W]` with `out[b, t, u] = d[t + u, b, u]`."""
  w = d.shape[2]
  n = jnp.arange(t)[:, None] + jnp.arange(w)[None, :]  # [T, W]
  return d[n, :, jnp.arange(w)[None, :]].transpose(2, 0, 1)


def _valid_cells(n, t_len, u_len, width):
  """`[B, W]` mask of lattice cells on diagonal `n` (t = n - u) inside each utterance."""
  u = jnp.arange(width)[None, :]
  t = n - u
  return (t >= 0) & (t < t_len[:, None]) & (u <= u_len[:, None])


def _alphas(blank_d, label_d, t_len, u_len):
  """Forward scan. `blank_d [N, B, U+1]`, `label_d [N, B, U+1]` (last column NEG_INF) skewed
  arc weights -> alpha per diagonal `[N, B, U+1]`."""
  n_diag, b, w = blank_d.shape
  first = jnp.where(jnp.arange(w)[None, :] == 0, 0.0, NEG_INF) * jnp.ones((b, 1))

  def step(prev, n):
    from_blank = prev + blank_d[n - 1]
    from_label = jnp.pad(prev + label_d[n - 1], ((0, 0), (1, 0)), constant_values=NEG_INF)[:, :w]
    cur = jnp.logaddexp(from_blank, from_label)
    cur = jnp.where(_valid_cells(n, t_len, u_len, w), cur, NEG_INF)
    return cur, cur

  _, rest = jax.lax.scan(step, first, jnp.arange(1, n_diag))
  return jnp.concatenate([first[None], rest], axis=0)


def _log_likelihood(alphas, blank_d, t_len, u_len):
  """log P = alpha(T-1, U) + blank(T-1, U): both on diagonal T-1+U at index U."""
  n_final = t_len - 1 + u_len
  b = jnp.arange(alphas.shape[1])
  return alphas[n_final, b, u_len] + blank_d[n_final, b, u_len]


def _prepare(blank, label, t_len, u_len):
  b, t, w = blank.shape
  n_diag = t + w - 1
  label = jnp.pad(label, ((0, 0), (0, 0), (0, 1)), constant_values=NEG_INF)
  # Rows with no frames (batch padding) are computed as T=1, U=0 and zeroed by the callers.
  t_len = jnp.maximum(jnp.asarray(t_len, jnp.int32), 1)
  u_len = jnp.asarray(u_len, jnp.int32)
  return _skew(blank, n_diag), _skew(label, n_diag), t_len, u_len


def _nll_plain(blank, label, t_len, u_len):
  """The forward algorithm alone; autodiff through it is the reference for the custom VJP."""
  real = jnp.asarray(t_len) > 0
  blank_d, label_d, t_len, u_len = _prepare(blank, label, t_len, u_len)
  alphas = _alphas(blank_d, label_d, t_len, u_len)
  return jnp.where(real, -_log_likelihood(alphas, blank_d, t_len, u_len), 0.0)


@jax.custom_vjp
def _nll(blank, label, t_len, u_len):
  return _nll_plain(blank, label, t_len, u_len)


def _nll_fwd(blank, label, t_len, u_len):
  real = jnp.asarray(t_len) > 0
  blank_d, label_d, t_len, u_len = _prepare(blank, label, t_len, u_len)
  alphas = _alphas(blank_d, label_d, t_len, u_len)
  log_p = _log_likelihood(alphas, blank_d, t_len, u_len)
  return jnp.where(real, -log_p, 0.0), (blank_d, label_d, alphas, log_p, t_len, u_len, real)


def _nll_bwd(res, g):
  blank_d, label_d, alphas, log_p, t_len, u_len, real = res
  g = jnp.where(real, g, 0.0)
  n_diag, b, w = blank_d.shape
  t = n_diag - w + 1
  terminal = t_len + u_len  # the virtual cell (T, U) after the final blank, beta = 0
  u_idx = jnp.arange(w)[None, :]

  def step(beta_next, n):
    # beta_next: beta on diagonal n + 1, with the terminal injected where it lies.
    beta_next = jnp.where((n + 1 == terminal)[:, None] & (u_idx == u_len[:, None]), 0.0, beta_next)
    beta_right = jnp.pad(beta_next[:, 1:], ((0, 0), (0, 1)), constant_values=NEG_INF)
    via_blank = blank_d[n] + beta_next
    via_label = label_d[n] + beta_right
    beta = jnp.where(_valid_cells(n, t_len, u_len, w), jnp.logaddexp(via_blank, via_label), NEG_INF)
    scale = -g[:, None]  # d(-log P) scaled by the incoming cotangent
    # min(., 0): an arc's posterior is at most 1; it also keeps exp() finite on rows whose
    # log P is so small that it underflowed to NEG_INF.
    grad_blank = scale * jnp.exp(jnp.minimum(alphas[n] + via_blank - log_p[:, None], 0.0))
    grad_label = scale * jnp.exp(jnp.minimum(alphas[n] + via_label - log_p[:, None], 0.0))
    return beta, (grad_blank, grad_label)

  start = jnp.full((b, w), NEG_INF)
  _, (g_blank, g_label) = jax.lax.scan(step, start, jnp.arange(n_diag), reverse=True)
  return _unskew(g_blank, t), _unskew(g_label, t)[:, :, : w - 1], None, None


_nll.defvjp(_nll_fwd, _nll_bwd)


def rnnt_loss_from_log_probs(blank_log_probs: jax.Array, label_log_probs: jax.Array,
                             logit_lengths: jax.Array, label_lengths: jax.Array) -> jax.Array:
  """Negative log-likelihoods `[B]` from the lattice's arc weights.

  Args:
    blank_log_probs: `[B, T, U+1]`, log P(blank | t, u).
    label_log_probs: `[B, T, U]`, log P(y[u] | t, u) (the label that leaves row u).
    logit_lengths: `[B]` frames `T_b >= 1` (0 marks a padding row: loss and gradient 0);
      label_lengths: `[B]` labels `0 <= U_b <= U`.
  """
  blank = blank_log_probs.astype(jnp.float32)
  label = label_log_probs.astype(jnp.float32)
  return _nll(blank, label, logit_lengths, label_lengths)


def arc_log_probs(logits: jax.Array, labels: jax.Array, blank_id: int):
  """`logits [..., U+1, V]`, `labels [B, U]` -> blank `[..., U+1]`, label `[..., U]` log-probs
  (log-softmax in float32)."""
  logits = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)
  blank = logits[..., blank_id] - lse
  u = labels.shape[1]
  idx = labels.reshape(labels.shape[0], *([1] * (logits.ndim - 3)), u, 1)
  idx = jnp.broadcast_to(idx, logits.shape[:-2] + (u, 1))
  label = jnp.take_along_axis(logits[..., :u, :], idx, axis=-1)[..., 0] - lse[..., :u]
  return blank, label


def _reduce(nll, label_lengths, reduction):
  if reduction == "none":
    return nll
  if reduction == "sum":
    return nll.sum()
  if reduction == "mean":
    return nll.mean()
  if reduction == "mean_per_label":  # per-character loss, the figure users watch
    return nll.sum() / jnp.maximum(label_lengths.sum(), 1)
  raise ValueError(f"unknown reduction {reduction!r}")


@functools.partial(jax.jit, static_argnames=("blank_id", "reduction"))
def rnnt_loss(logits: jax.Array, labels: jax.Array, logit_lengths: jax.Array,
              label_lengths: jax.Array, blank_id: int = 0, reduction: str = "none") -> jax.Array:
  """RNN-T loss from unnormalized joint outputs (log-softmax fused inside).

  Args:
    logits: `[B, T, U+1, V]`, any float dtype (computed in float32).
    labels: `[B, U]` int, padded with anything past `label_lengths`.
    logit_lengths: `[B]` int, `1 <= T_b <= T`. label_lengths: `[B]` int, `0 <= U_b <= U`.
    reduction: "none" (`[B]`), "sum", "mean", or "mean_per_label".
  """
  blank, label = arc_log_probs(logits, labels, blank_id)
  nll = _nll(blank, label, logit_lengths, label_lengths)
  return _reduce(nll, label_lengths, reduction)


def rnnt_loss_lean(encoded: jax.Array, predicted: jax.Array,
                   joint_fn: Callable[[jax.Array, jax.Array], jax.Array], labels: jax.Array,
                   logit_lengths: jax.Array, label_lengths: jax.Array, *, blank_id: int = 0,
                   chunk: int = 16, reduction: str = "none") -> jax.Array:
  """RNN-T loss that computes the joint `chunk` frames at a time and keeps only the blank and
  label log-probabilities: memory `O(B * chunk * (U+1) * V)` instead of `O(B * T * (U+1) * V)`.

  Args:
    encoded: `[B, T, ...]` encoder side of the joint (e.g. projected frames `[B, T, D]`).
    predicted: `[B, U+1, ...]` prediction-network side.
    joint_fn: `(encoded [B, Tc, ...], predicted [B, U+1, ...]) -> logits [B, Tc, U+1, V]`.
      Each chunk is rematerialized in the backward pass (`jax.checkpoint`).
    labels, logit_lengths, label_lengths, blank_id, reduction: as `rnnt_loss`.
  """
  b, t = encoded.shape[:2]
  pad = -t % chunk
  enc = jnp.pad(encoded, ((0, 0), (0, pad)) + ((0, 0),) * (encoded.ndim - 2))
  enc = enc.reshape(b, (t + pad) // chunk, chunk, *encoded.shape[2:]).swapaxes(0, 1)

  @jax.checkpoint
  def arcs(enc_chunk):
    return arc_log_probs(joint_fn(enc_chunk, predicted), labels, blank_id)

  blank, label = jax.lax.map(arcs, enc)  # [Nc, B, chunk, U+1], [Nc, B, chunk, U]
  blank = blank.swapaxes(0, 1).reshape(b, t + pad, -1)[:, :t]
  label = label.swapaxes(0, 1).reshape(b, t + pad, -1)[:, :t]
  nll = _nll(blank, label, logit_lengths, label_lengths)
  return _reduce(nll, label_lengths, reduction)
