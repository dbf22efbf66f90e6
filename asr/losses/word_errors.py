"""Word errors between label sequences on the device: a batched, jitted word-level edit
distance over token ids, so a loss on word errors (`asr.losses.mwer`) never leaves the step.

Words come from the tokenizer's pieces (`Tokenizer.pieces()`, the text of each id):

- a piece's characters, without spaces and SentencePiece's word marker `▁`, are its part of a
  word; a piece with none (the space of the character tokenizer, a lone `▁`, blank) separates
  words;
- a piece that begins with a space or `▁` opens a new word; one that ends with a space closes
  its word.

So `"the cat"` in characters and `▁the ▁c at` in word pieces are the same two words, whatever
pieces spell them. Each word becomes a 32-bit polynomial hash of its characters (Horner's rule,
computed per piece on the host and combined per word on the device); two different words
collide with probability about 2^-32, far below any WER a table reports.

The edit distance runs one row of the Levenshtein table per reference word (`lax.scan`) with
the row's insertions resolved at once by a running minimum:
`d[i][j] = j + min_{k<=j} (t[k] - k)`, `t[k] = min(d[i-1][k] + 1, d[i-1][k-1] + [a_i != b_k])`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

_MUL = 1_000_003          # the hash's base (odd, so multiplication is invertible mod 2^32)
WORD_MARKER = "\u2581"    # SentencePiece's "▁"


@dataclasses.dataclass(frozen=True)
class WordTable:
  """Per token id `[V]`: `hash` of its characters (uint32), `chars` (how many; 0 for a
  separator), `opens` (begins a new word), `closes` (ends its word)."""
  hash: np.ndarray
  chars: np.ndarray
  opens: np.ndarray
  closes: np.ndarray

  @classmethod
  def from_pieces(cls, pieces: Sequence[str]) -> "WordTable":
    """`pieces[i]`: the text of token id `i` (`""` for blank and control ids). A piece with a
    space inside its characters would hold two words and is refused, naming it."""
    n = len(pieces)
    table = cls(np.zeros(n, np.uint32), np.zeros(n, np.int32), np.zeros(n, bool),
                np.zeros(n, bool))
    for i, piece in enumerate(pieces):
      text = piece.replace(WORD_MARKER, " ")
      core = text.strip(" ")
      if " " in core:
        raise ValueError(f"token {i} ({piece!r}) spans a word boundary: a word-level edit "
                         "distance needs each token inside one word")
      h = 0
      for c in core:
        h = (h * _MUL + ord(c) + 1) % 2 ** 32
      table.hash[i], table.chars[i] = h, len(core)
      table.opens[i] = text.startswith(" ")
      table.closes[i] = text.endswith(" ")
    return table


def words(tokens: jax.Array, lengths: jax.Array, table: WordTable) -> tuple[jax.Array, jax.Array]:
  """Token ids `[..., L]` with lengths `[...]` -> word hashes `[..., L]` (uint32, packed to the
  front, 0 after the last word) and word counts `[...]` (int32)."""
  lead, size = tokens.shape[:-1], tokens.shape[-1]
  flat = tokens.reshape(-1, size)
  hashes, counts = jax.vmap(lambda t, n: _words(t, n, table))(flat, lengths.reshape(-1))
  return hashes.reshape(*lead, size), counts.reshape(lead)


def _words(tok: jax.Array, n: jax.Array, table: WordTable):
  size = tok.shape[0]
  pos = jnp.arange(size)
  valid = pos < n
  chars = jnp.where(valid, jnp.asarray(table.chars)[tok], 0)
  member = chars > 0
  opens = jnp.asarray(table.opens)[tok]
  closes = jnp.asarray(table.closes)[tok]
  # A word begins at a member token with no member before it in the same word.
  prev_member = jnp.concatenate([jnp.zeros(1, bool), member[:-1]])
  prev_closes = jnp.concatenate([jnp.zeros(1, bool), closes[:-1]])
  begins = member & (opens | prev_closes | ~prev_member)
  word = jnp.cumsum(begins) - 1                                         # [L] word index
  slot = jnp.where(member, word, size)                                  # non-members: dropped
  # Horner's rule over a word's pieces: piece i's hash is scaled by MUL^(characters after it
  # in its word) = (word's last cumulative count) - (its own cumulative count).
  cum = jnp.cumsum(chars)
  end = jnp.zeros(size, cum.dtype).at[slot].max(cum, mode="drop")
  after = (end[jnp.minimum(slot, size - 1)] - cum).astype(jnp.uint32)
  scaled = jnp.asarray(table.hash)[tok] * jnp.power(jnp.uint32(_MUL), after)
  hashes = jnp.zeros(size, jnp.uint32).at[slot].add(scaled, mode="drop")
  return hashes, jnp.sum(begins).astype(jnp.int32)


def edit_distance(ref: jax.Array, ref_lengths: jax.Array, hyp: jax.Array,
                  hyp_lengths: jax.Array) -> jax.Array:
  """Levenshtein distance between `ref [..., N]` and `hyp [..., M]` (any comparable ids) of
  lengths `[...]` -> `[...]` int32: substitutions, deletions and insertions, each 1."""
  lead = ref.shape[:-1]
  flat = lambda x: x.reshape(-1, x.shape[-1])
  out = jax.vmap(_edit_distance)(flat(ref), ref_lengths.reshape(-1), flat(hyp),
                                 hyp_lengths.reshape(-1))
  return out.reshape(lead)


def _edit_distance(ref, n, hyp, m):
  j = jnp.arange(hyp.shape[0] + 1, dtype=jnp.int32)

  def row(prev, i):
    diagonal = prev[:-1] + (hyp != ref[i])                   # d[i-1][k-1] + substitution
    vertical = prev[1:] + 1                                  # d[i-1][k] + deletion
    t = jnp.concatenate([prev[:1] + 1, jnp.minimum(diagonal, vertical)])
    new = jax.lax.cummin(t - j, axis=0) + j                  # + insertions along the row
    return jnp.where(i < n, new, prev), None

  last, _ = jax.lax.scan(row, j, jnp.arange(ref.shape[0]))
  return last[m]


def word_errors(hyp: jax.Array, hyp_lengths: jax.Array, ref: jax.Array, ref_lengths: jax.Array,
                table: WordTable) -> tuple[jax.Array, jax.Array]:
  """Hypotheses `[..., L]` against references `[..., U]` (token ids, lengths `[...]`; leading
  shapes broadcast: `[B, K, L]` hypotheses against `[B, 1, U]` references) -> word errors
  `[...]` (int32) and the references' word counts `[...]`."""
  hyp_words, hyp_count = words(hyp, hyp_lengths, table)
  ref_words, ref_count = words(ref, ref_lengths, table)
  lead = jnp.broadcast_shapes(hyp.shape[:-1], ref.shape[:-1])
  bcast = lambda x, tail: jnp.broadcast_to(x, lead + tail)
  errors = edit_distance(bcast(ref_words, ref.shape[-1:]), bcast(ref_count, ()),
                         bcast(hyp_words, hyp.shape[-1:]), bcast(hyp_count, ()))
  return errors, bcast(ref_count, ())
