"""The int8 processor's arithmetic, slowly and plainly: Python integers (unbounded, so nothing
overflows by accident), one element at a time. `hardware.fixed_point` (vectorized, jitted) must
equal it bit for bit; the tests check that. Conventions as in `hardware.fixed_point`.
"""

from __future__ import annotations

import numpy as np

from hardware.fixed_point import int_range

INT32 = (-(1 << 31), (1 << 31) - 1)


def requantize(acc, m0, n, bits: int = 8) -> np.ndarray:
  """Each `acc` times `m0 / 2^n` (per channel: the last axis), rounded half up, saturated."""
  acc = np.asarray(acc)
  m0 = np.broadcast_to(np.asarray(m0), acc.shape[-1:] if acc.ndim else ())
  n = np.broadcast_to(np.asarray(n), m0.shape)
  lo, hi = int_range(bits)
  out = np.empty(acc.shape, np.int64)
  for idx in np.ndindex(acc.shape):
    c = idx[-1] if acc.ndim else ()
    a, m, s = int(acc[idx]), int(m0[c]), int(n[c])
    if not INT32[0] <= a <= INT32[1]:
      raise OverflowError(f"accumulator {a} at {idx} is outside int32")
    y = (a * m + (1 << (s - 1))) >> s       # Python's >> floors, as an arithmetic shift does
    out[idx] = min(max(y, lo), hi)
  return out


def int_matmul(x, w, bias=None) -> np.ndarray:
  """`x [..., K]` @ `w [K, N]` (+ `bias [N]`), each output a Python sum of products; raises if
  an accumulator leaves int32 (the hardware's accumulator would wrap)."""
  x, w = np.asarray(x), np.asarray(w)
  rows = x.reshape(-1, x.shape[-1])
  out = np.empty((rows.shape[0], w.shape[1]), np.int64)
  for i, row in enumerate(rows):
    for j in range(w.shape[1]):
      acc = sum(int(a) * int(b) for a, b in zip(row, w[:, j]))
      if bias is not None:
        acc += int(bias[j])
      if not INT32[0] <= acc <= INT32[1]:
        raise OverflowError(f"accumulator {acc} of output ({i}, {j}) is outside int32")
      out[i, j] = acc
  return out.reshape(*x.shape[:-1], w.shape[1])


def lookup(table, q) -> np.ndarray:
  """`table[q + len(table) / 2]`, element by element."""
  q = np.asarray(q)
  out = np.empty(q.shape, np.int64)
  for idx in np.ndindex(q.shape):
    out[idx] = int(table[int(q[idx]) + len(table) // 2])
  return out


def _shift(x: int, k: int) -> int:
  return (x + (1 << (k - 1))) >> k


def _sat(x: int, bits: int) -> int:
  lo, hi = int_range(bits)
  return min(max(x, lo), hi)


def dense(layer, x) -> np.ndarray:
  """`hardware.int8_layers.IntDense.apply`, plainly."""
  acc = int_matmul(x, np.asarray(layer.kernel), np.asarray(layer.bias))
  return requantize(acc, np.asarray(layer.m0), np.asarray(layer.shift), layer.out_bits)


def lstm(layer, x, lengths, state=None):
  """`hardware.int8_layers.IntLSTM.apply`, frame by frame and unit by unit: returns h
  `[B, T, H]` and the state `(h, c)` (lists of Python integers per row; zeros if None)."""
  from hardware.int8_layers import (ACT_FRAC, CELL_FRAC, GATE_FRAC, H_FRAC, SIGMOID, TABLE_FRAC,
                                    TANH)
  x = np.asarray(x)
  b, t, _ = x.shape
  hidden = np.asarray(layer.w_rec).shape[0]
  g_in = requantize(int_matmul(x, np.asarray(layer.w_in), np.asarray(layer.b_in)),
                    np.asarray(layer.m_in), np.asarray(layer.n_in), 16)
  w_rec, m_rec, n_rec = np.asarray(layer.w_rec), np.asarray(layer.m_rec), np.asarray(layer.n_rec)
  index = lambda v: _sat(_shift(v, GATE_FRAC - TABLE_FRAC), 12) + 2048
  out = np.zeros((b, t, hidden), np.int64)
  state = state or ([[0] * hidden for _ in range(b)], [[0] * hidden for _ in range(b)])
  hs, cs = [list(v) for v in state[0]], [list(v) for v in state[1]]
  for u in range(b):
    h, c = hs[u], cs[u]
    for s in range(int(lengths[u])):
      rec = requantize(int_matmul(np.array([h]), w_rec), m_rec, n_rec, 16)[0]
      g = [_sat(int(g_in[u, s, k]) + int(rec[k]), 16) for k in range(4 * hidden)]
      for j in range(hidden):
        i, f, gg, o = (g[q * hidden + j] for q in range(4))
        si, sf, so = int(SIGMOID[index(i)]), int(SIGMOID[index(f)]), int(SIGMOID[index(o)])
        tg = int(TANH[index(gg)])
        c[j] = _sat(_shift(sf * c[j], ACT_FRAC) + _shift(si * tg, 2 * ACT_FRAC - CELL_FRAC), 16)
        h[j] = _sat(_shift(so * int(TANH[index(c[j])]), 2 * ACT_FRAC - H_FRAC), 8)
      out[u, s] = h
  return out, (hs, cs)


def layer_norm(layer, x) -> np.ndarray:
  """`hardware.int8_layers.IntLayerNorm.apply`, row by row: the mean and variance as exact
  integers, `math.isqrt`, one rounded division per element."""
  import math
  from hardware.int8_layers import NORM_FRAC
  x = np.asarray(x)
  gamma, beta = np.asarray(layer.gamma), np.asarray(layer.beta)
  out = np.empty(x.shape, np.int64)
  for idx in np.ndindex(x.shape[:-1]):
    row = [int(v) for v in x[idx]]
    n, total = len(row), sum(row)
    d = [n * v - total for v in row]
    std = max(math.isqrt(sum(v * v for v in d) // n), 1)
    for j, v in enumerate(d):
      num, den = v * int(gamma[j]), std << NORM_FRAC
      out[idx + (j,)] = _sat((2 * num + den) // (2 * den) + int(beta[j]), 8)
  return out


def _tanh_to_int8(g: int) -> int:
  from hardware.int8_layers import ACT_FRAC, GATE_FRAC, H_FRAC, TANH
  index = _sat(_shift(g, GATE_FRAC - 8), 12) + 2048
  return _sat(_shift(int(TANH[index]), ACT_FRAC - H_FRAC), 8)


def greedy(model, features, lengths, max_symbols: int) -> list[list[int]]:
  """`hardware.int8_transducer`'s encoder and greedy search, one utterance at a time: int8
  stacked features `[B, T, F']`, `lengths [B]` -> each utterance's tokens."""
  results = []
  for u in range(len(lengths)):
    x, n = np.asarray(features)[u:u + 1, : int(lengths[u])], int(lengths[u])
    for i, layer in enumerate(model.layers):
      if i and i == model.reduce_after and model.reduce > 1:
        f = x.shape[2]
        x = np.pad(x, ((0, 0), (0, -x.shape[1] % model.reduce), (0, 0)))
        x = x.reshape(1, -1, f * model.reduce)
        n = x.shape[1]
      x, _ = lstm(layer, x, [n])
      if model.norms:
        x = layer_norm(model.norms[i], x)
    enc_p = dense(model.enc_proj, x)[0]                           # [T'', J]
    tokens, state = [], None

    def pred_step(state, token):
      if model.predictor_kind == "lstm":
        y, state = lstm(model.pred, np.asarray(model.embed)[[token]][None], [1], state)
        h = y[0, 0]
      else:
        state = (state or [0] * model.context)[1:] + [token]
        e = np.asarray(model.embed)[state].reshape(1, -1)
        h = [_tanh_to_int8(int(g)) for g in dense(model.pred, e)[0]]
      return dense(model.pred_proj, np.asarray([h]))[0], state

    pred_p, state = pred_step(state, 0)
    for e in enc_p:
      for _ in range(max_symbols):
        hidden = [_tanh_to_int8(_sat(int(a) + int(b), 16)) for a, b in zip(e, pred_p)]
        logits = dense(model.out, np.asarray([hidden]))[0]
        k = int(np.argmax(logits))
        if k == 0:
          break
        tokens.append(k)
        pred_p, state = pred_step(state, k)
    results.append(tokens)
  return results
