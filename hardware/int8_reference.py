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


def input_gates(layer, x) -> np.ndarray:
  """Every frame's input gates (Q3.12) of an integer LSTM layer (`IntLSTM` or
  `IntLowRankLSTM`), `[..., 4H]`."""
  from hardware.int8_layers import IntLowRankLSTM
  if isinstance(layer, IntLowRankLSTM):
    return dense(layer.in_v, dense(layer.in_u, x))
  return requantize(int_matmul(x, np.asarray(layer.w_in), np.asarray(layer.b_in)),
                    np.asarray(layer.m_in), np.asarray(layer.n_in), 16)


def recurrent_gates(layer, h: list[int]) -> np.ndarray:
  """The recurrent product's gates (Q3.12) of one state `h` (Python integers), `[4H]`."""
  from hardware.int8_layers import IntLowRankLSTM
  if isinstance(layer, IntLowRankLSTM):
    return dense(layer.rec_v, dense(layer.rec_u, np.array([h])))[0]
  return requantize(int_matmul(np.array([h]), np.asarray(layer.w_rec)), np.asarray(layer.m_rec),
                    np.asarray(layer.n_rec), 16)[0]


def cell(g_in, rec, h: list[int], c: list[int]) -> tuple[list[int], list[int]]:
  """One frame of the integer LSTM cell, unit by unit: input gates `g_in [4H]` and recurrent
  gates `rec [4H]` (Q3.12), state (h, c) -> the new state."""
  from hardware.int8_layers import (ACT_FRAC, CELL_FRAC, GATE_FRAC, H_FRAC, SIGMOID,
                                    TABLE_FRAC, TANH)
  hidden = len(h)
  index = lambda v: _sat(_shift(v, GATE_FRAC - TABLE_FRAC), 12) + 2048
  g = [_sat(int(g_in[k]) + int(rec[k]), 16) for k in range(4 * hidden)]
  h, c = list(h), list(c)
  for j in range(hidden):
    i, f, gg, o = (g[q * hidden + j] for q in range(4))
    si, sf, so = int(SIGMOID[index(i)]), int(SIGMOID[index(f)]), int(SIGMOID[index(o)])
    tg = int(TANH[index(gg)])
    c[j] = _sat(_shift(sf * c[j], ACT_FRAC) + _shift(si * tg, 2 * ACT_FRAC - CELL_FRAC), 16)
    h[j] = _sat(_shift(so * int(TANH[index(c[j])]), 2 * ACT_FRAC - H_FRAC), 8)
  return h, c


def lstm(layer, x, lengths, state=None):
  """`hardware.int8_layers.IntLSTM.apply` (or `IntLowRankLSTM`'s), frame by frame and unit by
  unit: returns h `[B, T, H]` and the state `(h, c)` (lists of Python integers per row; zeros
  if None)."""
  x = np.asarray(x)
  b, t, _ = x.shape
  hidden = layer.hidden
  g_in = input_gates(layer, x)
  out = np.zeros((b, t, hidden), np.int64)
  state = state or ([[0] * hidden for _ in range(b)], [[0] * hidden for _ in range(b)])
  hs, cs = [list(v) for v in state[0]], [list(v) for v in state[1]]
  for u in range(b):
    for s in range(int(lengths[u])):
      hs[u], cs[u] = cell(g_in[u, s], recurrent_gates(layer, hs[u]), hs[u], cs[u])
      out[u, s] = hs[u]
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
      out[idx + (j,)] = _sat((2 * num + den) // (2 * den) + int(beta[j]), layer.out_bits)
  return out


def _tanh_to_int8(g: int) -> int:
  from hardware.int8_layers import ACT_FRAC, GATE_FRAC, H_FRAC, TANH
  index = _sat(_shift(g, GATE_FRAC - 8), 12) + 2048
  return _sat(_shift(int(TANH[index]), ACT_FRAC - H_FRAC), 8)


def lstm_encoder(enc, x):
  """`hardware.int8_lstm.IntLSTMEncoder.encode` of one utterance `[1, T, F']` (no
  padding) -> its frames `[1, T'', H]`."""
  for i, layer in enumerate(enc.layers):
    if i and i == enc.reduce_after and enc.reduce > 1:
      f = x.shape[2]
      x = np.pad(x, ((0, 0), (0, -x.shape[1] % enc.reduce), (0, 0)))
      x = x.reshape(1, -1, f * enc.reduce)
    x, _ = lstm(layer, x, [x.shape[1]])
    if enc.norms:
      x = layer_norm(enc.norms[i], x)
  return x


def amnet_encoder(enc, x):
  """`hardware.int8_amnet.IntAmNetEncoder.routed_encode` of one utterance `[1, T, F']` (no
  padding): the arbitrator and its backlog frame by frame, then each layer's frames through
  the cell its output frame was routed to -> (frames `[1, T'', H]`, routes `[T'']`)."""
  from hardware.int8_amnet import QUEUE_FRAC
  x = np.asarray(x)
  r = max(enc.reduce, 1)
  feats = np.pad(x, ((0, 0), (0, -x.shape[1] % r), (0, 0))).reshape(1, -1, x.shape[2] * r)
  a = enc.arbitrator
  hidden = dense(a.hidden, feats)[0]
  base = dense(a.out, np.asarray([[_tanh_to_int8(int(g)) for g in row] for row in hidden]))
  weight = [int(w) for w in np.asarray(a.backlog_weight)]
  costs = [int(c) for c in enc.costs]
  hop, d, routes = enc.macs_per_hop, 0, []
  for t in range(base.shape[0]):
    logits = [int(v) for v in base[t]]
    if hop:
      queued = max(d - hop, 0)
      frames = (queued << QUEUE_FRAC) // hop
      logits = [v + _shift(w * frames, QUEUE_FRAC) for v, w in zip(logits, weight)]
    route = 1 if logits[1] > logits[0] else 0
    if hop:
      d = queued + costs[route]
    routes.append(route)
  for i, layer in enumerate(enc.layers):
    if i and i == enc.reduce_after and enc.reduce > 1:
      f = x.shape[2]
      x = np.pad(x, ((0, 0), (0, -x.shape[1] % enc.reduce), (0, 0)))
      x = x.reshape(1, -1, f * enc.reduce)
    rate = 1 if x.shape[1] == len(routes) else r
    g = {0: input_gates(layer.full, x)[0], 1: input_gates(layer.cheap, x)[0]}
    h, c, out = [0] * layer.hidden, [0] * layer.hidden, []
    for s in range(x.shape[1]):
      branch = routes[s // rate]
      cell_layer = layer.cheap if branch else layer.full
      h, c = cell(g[branch][s], recurrent_gates(cell_layer, h), h, c)
      out.append(h)
    x = np.asarray([out])
    if enc.norms:
      x = layer_norm(enc.norms[i], x)
  return x, routes


def _table(layer, x) -> np.ndarray:
  """`IntActDense.apply`: the product, then the table."""
  return lookup(np.asarray(layer.table), dense(layer.dense, x))


def _attention(a, r, n: int) -> np.ndarray:
  """`IntAttention.apply` on one utterance `r [T, D]` of `n` valid frames, query by query and
  head by head."""
  from hardware.int8_transformer import EXP, PROB_FRAC
  t, d = r.shape
  h = a.heads
  dh = d // h
  half = dh // 2
  qkv = dense(a.qkv, layer_norm(a.norm, r))                       # [T, 3D]
  cos, sin = np.asarray(a.cos), np.asarray(a.sin)
  rot = (int(a.rot_m0), int(a.rot_n))

  def rotate(vec, pos):                                           # one head's [Dh] at pos
    p = min(pos, cos.shape[0] - 1)
    out = []
    for i in range(dh):
      j = i % half
      x1, x2, c, s = int(vec[j]), int(vec[j + half]), int(cos[p, j]), int(sin[p, j])
      out.append(x1 * c - x2 * s if i < half else x1 * s + x2 * c)
    return [int(v) for v in requantize(np.asarray(out), *rot, 8)]

  ctx = np.zeros((t, d), np.int64)
  for head in range(h):
    q = [rotate(qkv[i, head * dh:(head + 1) * dh], i) for i in range(t)]
    k = [rotate(qkv[i, d + head * dh:d + (head + 1) * dh], i) for i in range(t)]
    v = qkv[:, 2 * d + head * dh:2 * d + (head + 1) * dh]
    for i in range(t):
      keys = [j for j in range(n) if i // a.chunk - a.left <= j // a.chunk <= i // a.chunk]
      if not keys:                  # a padding frame with no valid key in its window
        continue
      scores = [sum(x * y for x, y in zip(q[i], k[j])) for j in keys]
      top = max(scores)
      z = requantize(np.asarray([s - top for s in scores]), int(a.score_m0), int(a.score_n),
                     12)
      e = [int(EXP[int(v_) + len(EXP) // 2]) for v_ in z]
      total = max(sum(e), 1)
      p = [min((2 * (v_ << PROB_FRAC) + total) // (2 * total), (1 << PROB_FRAC) - 1) for v_ in e]
      for c in range(dh):
        ctx[i, head * dh + c] = sum(pj * int(v[j, c]) for pj, j in zip(p, keys))
  return dense(a.out, requantize(ctx, int(a.ctx_m0), int(a.ctx_n), 8))


def transformer_encoder(enc, x, n: int, gates: list | None = None):
  """`hardware.int8_transformer.IntTransformerEncoder.encode` of one utterance `x [1, T, F]`
  (T a multiple of the streamed chunk) of `n` valid frames -> its frames `[1, T'', D]` and
  their count. A gated encoder's gates (`[T'', units]` bool per block) are appended to
  `gates`."""
  def masked(rows, n):
    return np.asarray([row if i < n else [0] * len(row) for i, row in enumerate(rows)])

  def add(a, b):
    return np.asarray([[_sat(int(u) + int(v), 16) for u, v in zip(ra, rb)]
                       for ra, rb in zip(a, b)])

  def feed_forward(f, x):
    return dense(f.down, _table(f.up, layer_norm(f.norm, x)))

  x = np.asarray(x)[0]
  trunk = None
  if enc.arbitrator is not None:      # each output frame's stacked input, tanh by table
    s = enc.subsample_factor
    stacked = masked(x, n).reshape(x.shape[0] // s, s * x.shape[1])
    trunk = np.asarray([[_tanh_to_int8(int(g)) for g in row]
                        for row in dense(enc.arbitrator, stacked)])
  for layer in enc.subsampling:
    t = x.shape[0]
    joined = np.pad(masked(x, n), ((layer.kernel - layer.stride, 0), (0, 0)))
    taps = np.concatenate([joined[i:i + t:layer.stride] for i in range(layer.kernel)], axis=1)
    n = -(-n // layer.stride)
    x = masked(_table(layer.proj, taps), n)
  from hardware.int8_transformer import IntAttention, IntConvModule, IntFeedForward
  plain = {IntFeedForward: lambda u, x: feed_forward(u, x),
           IntAttention: lambda u, x: _attention(u, x, n),
           IntConvModule: lambda u, x: _conv_module(u, x)}
  for block in enc.blocks:
    head, opened = block.arbitrator, None
    if head is not None:
      logits = dense(head.out, trunk).astype(np.int64)
      if head.from_input is not None:
        logits = logits + dense(head.from_input, layer_norm(head.norm, x))
      opened = logits > 0
      if gates is not None:
        gates.append(opened)
    for j, name in enumerate(block.layout):  # the units in order, each added to the residual
      unit = block.units[name]
      y = plain[type(unit)](unit, x)
      if opened is not None:
        y = np.asarray([row if opened[i, j] else [0] * len(row) for i, row in enumerate(y)])
      x = add(x, y)
    if block.norm is not None:
      x = layer_norm(block.norm, x)
    x = masked(x, n)
  if enc.final_norm is not None:
    x = masked(layer_norm(enc.final_norm, x), n)
  return x[None], n


def _conv_module(c, r) -> np.ndarray:
  """`IntConvModule.apply` on one utterance `r [T, D]`, frame by frame and channel by
  channel."""
  from hardware.int8_layers import ACT_FRAC, GATE_FRAC, SIGMOID, TABLE_FRAC
  x = layer_norm(c.norm, r)
  values, gates = dense(c.values, x), dense(c.gates, x)
  glu = [[_shift(int(a) * int(SIGMOID[_sat(_shift(int(g), GATE_FRAC - TABLE_FRAC), 12) + 2048]),
                 ACT_FRAC) for a, g in zip(ra, rg)] for ra, rg in zip(values, gates)]
  w, bias = np.asarray(c.depthwise), np.asarray(c.depthwise_bias)
  k, (t, d) = w.shape[0], r.shape
  acc = np.zeros((t, d), np.int64)
  for s in range(t):
    for ch in range(d):
      acc[s, ch] = int(bias[ch]) + sum(glu[s - k + 1 + i][ch] * int(w[i, ch])
                                       for i in range(k) if s - k + 1 + i >= 0)
  y = requantize(acc, np.asarray(c.dw_m0), np.asarray(c.dw_n), 16)
  return dense(c.out, lookup(np.asarray(c.silu), layer_norm(c.depth_norm, y)))


def greedy(model, features, lengths, max_symbols: int) -> list[list[int]]:
  """`hardware.int8_transducer`'s encoder and greedy search, one utterance at a time: the
  encoder's int8 input `[B, T, F']` (`IntTransducer.prepare`), `lengths [B]` -> each
  utterance's tokens."""
  from hardware.int8_amnet import IntAmNetEncoder
  from hardware.int8_lstm import IntLSTMEncoder
  results = []
  for u in range(len(lengths)):
    if isinstance(model.encoder, IntAmNetEncoder):
      x, _ = amnet_encoder(model.encoder, np.asarray(features)[u:u + 1, : int(lengths[u])])
    elif isinstance(model.encoder, IntLSTMEncoder):
      x = lstm_encoder(model.encoder, np.asarray(features)[u:u + 1, : int(lengths[u])])
    else:
      x, n = transformer_encoder(model.encoder, np.asarray(features)[u:u + 1], int(lengths[u]))
      x = x[:, :n]
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
