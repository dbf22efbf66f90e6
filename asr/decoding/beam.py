"""Batched beam search for RNN-T under `jit`: fixed beam, prefix merging, n-best output.

A frame-synchronous search with a cap of `max_symbols` labels per frame, all shapes static.
The beam holds `K` hypotheses (slots), each *active* (may still emit on this frame) or *done*
(has taken this frame's blank). Each sub-step expands the active slots, pools their
candidates with the done slots, merges candidates that are the same hypothesis (same label
sequence and same status: their probabilities add, as the RNN-T sums over alignments), and keeps
the best `K` of the pool. After `max_symbols` label sub-steps one last sub-step allows only
blanks, and every slot is done; the next frame starts with all of them active.

Pruning the pool as a whole makes beam 1 exactly greedy search with the same cap. Hypotheses
are identified by a 32-bit rolling hash of their labels (as NeMo's batched search does); merged
scores use `logaddexp`. This generalizes icefall's modified beam search (one label per frame,
no blank probability after a label) to several labels a frame.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from asr.arrays import NEG_INF, is_live, length_mask, tree_where
_HASH_MUL = jnp.uint32(1_000_003)


def _hash_extend(h: jax.Array, token: jax.Array) -> jax.Array:
  return h * _HASH_MUL + (token.astype(jnp.uint32) + jnp.uint32(1))


def _gather_slots(tree, idx):
  """`tree` leaves `[B, K, ...]`, `idx [B, M]` -> leaves `[B, M, ...]`."""
  return jax.tree.map(lambda a: jnp.take_along_axis(
      a, idx.reshape(*idx.shape, *([1] * (a.ndim - 2))), axis=1), tree)


def _flat(tree, b, k):
  return jax.tree.map(lambda a: a.reshape(b * k, *a.shape[2:]), tree)


def _unflat(tree, b, k):
  return jax.tree.map(lambda a: a.reshape(b, k, *a.shape[1:]), tree)


def beam_decode(model, frames: jax.Array, frame_lengths: jax.Array, *, beam: int = 4,
                max_symbols: int = 4, max_len: int | None = None):
  """Encoder `frames [B, T, H]`, `frame_lengths [B]` -> n-best lists sorted by log-score:
  tokens `[B, K, L]` (0-padded), lengths `[B, K]`, scores `[B, K]` (log P of the hypothesis
  summed over the alignments the search merged; `NEG_INF` marks an empty slot).

  Not jitted (`beam_search` is), on any `model` with the transducer's decoding interface
  (`asr.decoding.greedy.greedy_decode` names it)."""
  b, t = frames.shape[:2]
  k = beam
  max_len = max_len or t * max_symbols
  enc_proj = model.joint.project_encoder(frames)  # [B, T, J]

  pred_state = model.predictor.init_state(b * k)
  out, pred_state = model.predictor.step(pred_state, jnp.zeros(b * k, jnp.int32))
  slots = {
      "tokens": jnp.zeros((b, k, max_len), jnp.int32),
      "lengths": jnp.zeros((b, k), jnp.int32),
      "scores": jnp.where(jnp.arange(k)[None, :] == 0, 0.0, NEG_INF) * jnp.ones((b, 1)),
      "hash": jnp.zeros((b, k), jnp.uint32),
      "pred_state": _unflat(pred_state, b, k),
      "pred_proj": _unflat(model.joint.project_prediction(out), b, k),
  }
  positions = jnp.arange(max_len)

  def sub_step(slots, done, e, allow_labels):
    """One expansion of the active slots; returns the new slots and their done flags."""
    logp = jax.nn.log_softmax(model.joint.single(e[:, None, :], slots["pred_proj"]), axis=-1)
    active = ~done
    v = logp.shape[-1]
    carried = jnp.where(done, slots["scores"], NEG_INF)                       # [B, K] done, kept
    blanks = jnp.where(active, slots["scores"] + logp[..., 0], NEG_INF)      # [B, K] -> done
    room = slots["lengths"] < max_len
    labels = slots["scores"][..., None] + logp[..., 1:]                   # [B, K, V-1] -> active
    labels = jnp.where((active & room)[..., None] & allow_labels, labels, NEG_INF)
    label_scores, label_idx = jax.lax.top_k(labels.reshape(b, -1), k)     # preselect K
    label_parent, label_token = label_idx // (v - 1), label_idx % (v - 1) + 1

    # The pool: [carried done K | blank extensions K | label extensions K].
    slot_ids = jnp.broadcast_to(jnp.arange(k), (b, k))
    parent = jnp.concatenate([slot_ids, slot_ids, label_parent], axis=1)  # [B, 3K]
    token = jnp.concatenate([jnp.zeros((b, 2 * k), jnp.int32), label_token], axis=1)
    score = jnp.concatenate([carried, blanks, label_scores], axis=1)
    is_done = jnp.concatenate([jnp.ones((b, 2 * k), bool), jnp.zeros((b, k), bool)], axis=1)
    parent_hash = jnp.take_along_axis(slots["hash"], parent, axis=1)
    h = jnp.where(is_done, parent_hash, _hash_extend(parent_hash, token))

    # Merge equal hypotheses: the first finite one of each (hash, status) takes the sum.
    same = (h[:, :, None] == h[:, None, :]) & (is_done[:, :, None] == is_done[:, None, :])
    live = is_live(score)
    same &= live[:, :, None] & live[:, None, :]
    merged = jax.nn.logsumexp(jnp.where(same, score[:, None, :], -jnp.inf), axis=-1)
    first = jnp.argmax(same, axis=-1) == jnp.arange(3 * k)[None, :]
    score = jnp.where(live & first, merged, NEG_INF)

    best, pick = jax.lax.top_k(score, k)                                  # [B, K]
    par = jnp.take_along_axis(parent, pick, axis=1)
    tok = jnp.take_along_axis(token, pick, axis=1)
    new_done = jnp.take_along_axis(is_done, pick, axis=1)
    extended = (~new_done) & is_live(best)
    old = _gather_slots({key: slots[key] for key in ("tokens", "lengths", "pred_state",
                                                      "pred_proj")}, par)
    out, new_state = model.predictor.step(_flat(old["pred_state"], b, k), tok.reshape(-1))
    new_proj = _unflat(model.joint.project_prediction(out), b, k)
    new_state = _unflat(new_state, b, k)
    write = extended[..., None] & (positions[None, None, :] == old["lengths"][..., None])
    return {
        "tokens": jnp.where(write, tok[..., None], old["tokens"]),
        "lengths": old["lengths"] + extended,
        "scores": best,
        "hash": jnp.take_along_axis(h, pick, axis=1),
        "pred_state": tree_where(extended, new_state, old["pred_state"]),
        "pred_proj": tree_where(extended, new_proj, old["pred_proj"]),
    }, new_done

  def frame(slots, inputs):
    e, valid = inputs  # [B, J], [B]
    new, done = slots, jnp.zeros((b, k), bool)
    for s in range(max_symbols + 1):  # the last sub-step admits blanks only
      new, done = sub_step(new, done, e, allow_labels=s < max_symbols)
    return tree_where(valid, new, slots), None

  valid = length_mask(frame_lengths, t).T  # [T, B]
  slots, _ = jax.lax.scan(frame, slots, (enc_proj.swapaxes(0, 1), valid))
  order = jnp.argsort(-slots["scores"], axis=1)
  take = lambda a: jnp.take_along_axis(a, order.reshape(*order.shape, *([1] * (a.ndim - 2))), 1)
  return take(slots["tokens"]), take(slots["lengths"]), take(slots["scores"])


beam_search = nnx.jit(beam_decode, static_argnames=("beam", "max_symbols", "max_len"))
