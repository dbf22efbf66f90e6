"""Minimum word error rate (MWER) training of a transducer, as a loss term (`mwer`).

The RNN-T loss raises the likelihood of the reference; a recognizer is judged by its word
errors. Over an n-best list `y_1..y_K` of each utterance, MWER minimises the expected word
errors under the model's distribution renormalised over the list (Prabhavalkar et al.,
ICASSP 2018, "Minimum word error rate training for attention-based sequence-to-sequence
models"; for RNN-T, Weng et al., Interspeech 2019, and Guo et al., Interspeech 2020,
"Efficient minimum word error rate training of RNN-Transducer for end-to-end speech
recognition"):

  L = sum_k P^(y_k | x) (W(y_k, y*) - W_mean),   P^(y_k | x) = P(y_k | x) / sum_j P(y_j | x)

with `W` the word errors against the reference and `W_mean` their mean over the list
(subtracting it changes no gradient in expectation and lowers the variance). As Guo et al.,
`P(y | x)` sums over **all** alignments of `y` (the transducer's forward pass:
`Transducer.score`), not only the one the search found. The term is summed over the batch's
utterances and divided by their reference words: expected word errors per reference word, the
WER the list's distribution expects. It sits beside the `rnnt` term, whose weight is the
papers' `lambda`:

  c.loss.rnnt = 0.1                                  # lambda
  c.loss.mwer = dict(weight=1.0, nbest=4, mode="semi_on_the_fly", every=4)

The n-best lists come from `asr.decoding.beam.beam_decode` inside the step, on the encoder
output of the step's own pass (the distribution being scored, dropout and augmentation
included) and under `stop_gradient`: the hypotheses are constants, their probabilities are
not. The search runs with statistics frozen (`Context.statistics` off: quantization ranges are
the training pass's to update). Empty slots of a beam (an utterance with fewer distinct
hypotheses than the beam) and duplicates (the same labels twice) leave the list; the empty
hypothesis is a hypothesis (every reference word deleted). An utterance with one hypothesis
contributes nothing: its renormalised probability is 1.

Two modes:
- `on_the_fly`: every step decodes its batch with the parameters being trained.
- `semi_on_the_fly`: the search and the term run on every `every`-th step only (`step % every
  == 0`, under `lax.cond`: the other steps are plain RNN-T steps and pay nothing for it). Guo
  et al. decouple decoding from the update so that it costs less than decoding every step, at
  the same gain; here on one device the saving is the decoding skipped. Being a function of
  the step, a resumed run decodes on the steps an uninterrupted one would.

Word errors are counted on the device (`asr.losses.word_errors`), with word boundaries from the
run's tokenizer (`attach`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from asr.arrays import is_live
from asr.decoding.beam import beam_decode
from asr.losses.word_errors import WordTable, word_errors
from asr.models.context import Context
from asr.training.objective import LossInputs, LossTerm, register_loss_term

MODES = ("on_the_fly", "semi_on_the_fly")


def distinct(tokens: jax.Array, lengths: jax.Array) -> jax.Array:
  """`tokens [B, K, L]` (0 after each length), `lengths [B, K]` -> `[B, K]` bool: the first
  occurrence of each label sequence in its list."""
  same = (jnp.all(tokens[:, :, None] == tokens[:, None], -1)
          & (lengths[:, :, None] == lengths[:, None]))
  k = tokens.shape[1]
  earlier = jnp.tril(jnp.ones((k, k), bool), -1)                   # [k, j]: j before k
  return ~jnp.any(same & earlier, -1)


def expected_errors(log_probs: jax.Array, errors: jax.Array,
                    valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Hypotheses' log-probabilities and word errors `[B, K]`, which are in the list `[B, K]` ->
  the MWER loss of each utterance `sum_k P^_k (W_k - W_mean)` `[B]` and the list's
  renormalised probabilities `P^ [B, K]` (0 off the list)."""
  errors = errors.astype(jnp.float32)
  post = jax.nn.softmax(jnp.where(valid, log_probs, -jnp.inf), axis=-1)
  post = jnp.where(valid, post, 0.0)      # an empty list (no valid entry) gives NaN: zero it
  count = jnp.maximum(jnp.sum(valid, -1, keepdims=True), 1)
  mean = jnp.sum(jnp.where(valid, errors, 0.0), -1, keepdims=True) / count
  return jnp.sum(post * jnp.where(valid, errors - mean, 0.0), -1), post


@register_loss_term("mwer")
class MinimumWordErrorRate(LossTerm):
  """Options: `nbest` hypotheses per utterance (from a beam of `beam`, at least `nbest`;
  default `nbest`), the search's `max_symbols` labels per frame and `max_len` labels per
  hypothesis (0: the batch's padded label width), `mode` and, for `semi_on_the_fly`, `every`."""

  def __init__(self, nbest: int = 4, beam: int = 0, max_symbols: int = 3, max_len: int = 0,
               mode: str = "semi_on_the_fly", every: int = 4):
    if mode not in MODES:
      raise ValueError(f"loss.mwer.mode must be one of {', '.join(MODES)}, got {mode!r}")
    beam = beam or nbest
    if nbest < 2 or beam < nbest:
      raise ValueError(f"loss.mwer needs nbest >= 2 and beam >= nbest, got nbest={nbest}, "
                       f"beam={beam}")
    if every < 1:
      raise ValueError(f"loss.mwer.every must be at least 1, got {every}")
    self.nbest, self.beam, self.max_symbols, self.max_len = nbest, beam, max_symbols, max_len
    self.every = every if mode == "semi_on_the_fly" else 1
    self.table: WordTable | None = None

  def attach(self, tokenizer) -> None:
    self.table = WordTable.from_pieces(tokenizer.pieces())

  def nbest_lists(self, model, encoded, labels: jax.Array):
    """The search on the encoder output: tokens `[B, K, L]`, lengths `[B, K]` and which
    entries are distinct live hypotheses `[B, K]`; constants of the step."""
    with Context(statistics=False).updating():
      tokens, lengths, scores = beam_decode(
          model, jax.lax.stop_gradient(encoded.frames), encoded.lengths, beam=self.beam,
          max_symbols=self.max_symbols, max_len=self.max_len or labels.shape[1])
    tokens, lengths, scores = (a[:, :self.nbest] for a in (tokens, lengths, scores))
    return tokens, lengths, is_live(scores) & distinct(tokens, lengths)

  def list_loss(self, x: LossInputs) -> tuple[jax.Array, dict]:
    """The term on this batch (a search, the hypotheses scored, the word errors)."""
    labels, label_lengths = x.batch["labels"], x.batch["label_lengths"]
    tokens, lengths, valid = self.nbest_lists(x.model, x.encoded, labels)
    errors, words = word_errors(tokens, lengths, labels[:, None], label_lengths[:, None],
                                self.table)
    nll = x.model.score(x.encoded, tokens, lengths)["rnnt"]               # [B, K]
    loss, post = expected_errors(-nll, errors, valid)
    real = x.is_real
    words = jnp.maximum(jnp.sum(jnp.where(real, words[:, 0], 0)), 1).astype(jnp.float32)
    per_word = lambda v: jnp.sum(jnp.where(real, v, 0.0)) / words
    oracle = jnp.min(jnp.where(valid, errors, jnp.iinfo(jnp.int32).max), -1)
    return per_word(loss), {
        "expected_wer": per_word(jnp.sum(post * errors, -1)),   # of the renormalised list
        "top_wer": per_word(errors[:, 0].astype(jnp.float32)),  # the search's best
        "oracle_wer": per_word(oracle.astype(jnp.float32)),
        "hypotheses": jnp.sum(jnp.where(real, jnp.sum(valid, -1), 0)) / jnp.maximum(
            jnp.sum(real), 1)}

  def __call__(self, x: LossInputs, state) -> tuple[jax.Array, dict]:
    if self.table is None:
      raise ValueError("loss.mwer counts words with the run's tokenizer: build it with "
                       "build_terms(..., tokenizer=...) (asr.training.loop.loss_terms does)")
    if self.every == 1:
      loss, metrics = self.list_loss(x)
      return loss, {**metrics, "decoded": jnp.ones((), jnp.float32)}

    def skipped():
      zero = jnp.zeros((), jnp.float32)
      return zero, {"expected_wer": zero, "top_wer": zero, "oracle_wer": zero,
                    "hypotheses": zero}
    decode = jnp.asarray(x.step) % self.every == 0
    loss, metrics = jax.lax.cond(decode, lambda: self.list_loss(x), skipped)
    return loss, {**metrics, "decoded": decode.astype(jnp.float32)}
