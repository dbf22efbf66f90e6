"""Evaluation: decode a split with greedy or beam search and score it.

`recognize` is one jitted function per (decoder, bucket shape): features, encoder, search. The
summary holds `wer, cer, substitutions, deletions, insertions, num_utterances, flops_per_frame,
flops_per_second, rtf, backend, per_accent, per_speaker, per_condition` (`{facet: {value:
WER}}`: noise kind, SNR band, reverberation, whisper), `flops_per_frame_executed` (the
encoder's FLOPs on non-zero weights only, what a processor that skips zeros spends, where the
encoder reports them), for a branching encoder (`asr.models.amnet`) `fast_fraction`: the
share of valid frames routed to its cheap branch, and for a gated one (`asr.models.gates`)
`open_fraction`: the share of its sub-blocks' per-frame gates that were open.
The per-utterance rows hold id, speaker,
accent, condition, reference, hypothesis, word_errors, num_words and (for beam search) the
n-best list.

`flops_per_frame` is the encoder's cost per output frame; `flops_per_second` is the whole
model's per second of audio: the encoder, plus the joint and the prediction network as greedy
decoding of the hypotheses would run them (`Transducer.decoding_flops`), so models of different
frame rates compare. Beam search spends more than that; the figure describes the model.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from asr import features as F
from asr.arrays import is_live
from asr.data.conditions import facets
from asr.decoding import beam_search, greedy_search_aligned
from asr.training.metrics import error_rates, grouped_wer, utterance_word_errors


@functools.lru_cache(maxsize=16)
def make_recognizer(graphdef, decoder: str = "greedy", beam: int = 4, max_symbols: int = 4):
  """`recognize(variables, audio [B, S], audio_lengths [B]) -> dict` of tokens `[B, (K,) L]`,
  lengths, scores (beam), frame lengths, per-frame encoder flops `flops [B, T']`, decoding
  flops `[B]`, and the whole work of each frame `frame_flops [B, T']` (encoder, joint, and the
  prediction network for the labels emitted there); `variables` is what
  `nnx.merge(graphdef, *variables)` takes (e.g. (params, model_state))."""
  if decoder not in ("greedy", "beam"):
    raise ValueError(f"decoder must be 'greedy' or 'beam', got {decoder!r}")

  @jax.jit
  def recognize(variables, audio, audio_lengths):
    model = nnx.merge(graphdef, *variables)
    feats, lengths = F.log_mel(audio, audio_lengths, model.cfg.features)
    enc = model.encode(feats, lengths)
    out = {"frame_lengths": enc.lengths, "flops": enc.flops}
    valid = enc.flops > 0
    if decoder == "greedy":
      out["tokens"], out["lengths"], emitted = greedy_search_aligned(
          model, enc.frames, enc.lengths, max_symbols=max_symbols)
      best = out["lengths"]
      frame_decoding = model.decoding_flops(valid, emitted)
    else:
      out["tokens"], out["lengths"], out["scores"] = beam_search(
          model, enc.frames, enc.lengths, beam=beam, max_symbols=max_symbols)
      best = out["lengths"][:, 0]
      # Beam search keeps no alignment: the best hypothesis's labels spread evenly over its
      # frames, and every frame's work done for each of the `beam` hypotheses.
      per_frame = best / jnp.maximum(enc.lengths, 1)
      frame_decoding = beam * model.decoding_flops(valid, valid * per_frame[:, None])
    out["decoding_flops"] = model.decoding_flops(enc.lengths, best)
    out["frame_flops"] = enc.flops + frame_decoding
    if "flops_executed" in enc.aux:   # the encoder's work on non-zero weights (zero skipping)
      out["frame_macs_executed"] = (enc.aux["flops_executed"] + frame_decoding) / 2
      out["encoder_flops_executed"] = jnp.sum(enc.aux["flops_executed"], axis=1)
    if "fast" in enc.aux:             # frames a branching encoder sent to its cheap branch
      out["fast_frames"] = jnp.sum(enc.aux["fast"], axis=1)
    if "open" in enc.aux:             # a gated encoder's open gates per frame, in frames
      out["open_frames"] = jnp.sum(enc.aux["open"], axis=1)
    return out

  return recognize


def evaluate(graphdef, variables, batches, tokenizer, *, decoder: str = "greedy",
             beam: int = 4, max_symbols: int = 4, max_batches: int = 0, progress=None,
             latency=None, recognize=None, backend: str = "float") -> tuple[dict, list[dict]]:
  """Decodes every batch of `batches` (audio batches: `features=None`) and scores them.
  `variables`: as `make_recognizer`'s. The batches are closed when this returns.

  `latency(out, audio_seconds [B]) -> seconds [B]`, if given (a device simulator:
  `hardware.latency`), gives each row its `latency_ms` from the recognizer's output `out`.
  `recognize` replaces the float recognizer with another that returns the same dict (the int8
  processor's: `hardware.int8_backend`); `backend` names it in the summary."""
  recognize = recognize or make_recognizer(graphdef, decoder, beam, max_symbols)
  try:
    summary, rows = _evaluate(recognize, variables, batches, tokenizer, decoder, max_batches,
                              batches.cfg.sample_rate, progress, latency)
    summary["backend"] = backend
    return summary, rows
  finally:
    batches.close()  # stops the producer thread of a split not read to its end


def _evaluate(recognize, variables, batches, tokenizer, decoder, max_batches, sample_rate,
              progress, latency):
  rows, refs, hyps = [], [], []
  encoder_flops, decoding_flops, frames, audio_s, decode_s = 0.0, 0.0, 0, 0.0, 0.0
  fast_frames = open_frames = executed_flops = None
  compiled = set()
  for i, batch in enumerate(batches):
    if max_batches and i >= max_batches:
      break
    audio, audio_lengths = jnp.asarray(batch["audio"]), jnp.asarray(batch["audio_lengths"])
    if audio.shape not in compiled:  # compile outside the timing: RTF measures decoding only
      jax.block_until_ready(recognize(variables, audio, audio_lengths))
      compiled.add(audio.shape)
    start = time.perf_counter()
    out = jax.device_get(recognize(variables, audio, audio_lengths))
    decode_s += time.perf_counter() - start
    real = batch["audio_lengths"] > 0
    audio_s += batch["audio_lengths"][real].sum() / sample_rate
    encoder_flops += float(out["flops"][real].sum())
    decoding_flops += float(out["decoding_flops"][real].sum())
    frames += int(out["frame_lengths"][real].sum())
    if "fast_frames" in out:
      fast_frames = (fast_frames or 0.0) + float(out["fast_frames"][real].sum())
    if "open_frames" in out:
      open_frames = (open_frames or 0.0) + float(out["open_frames"][real].sum())
    if "encoder_flops_executed" in out:
      executed_flops = (executed_flops or 0.0) + float(out["encoder_flops_executed"][real].sum())
    seconds = (np.asarray(latency(out, batch["audio_lengths"] / sample_rate))
               if latency is not None else None)
    for row in np.flatnonzero(real):
      if decoder == "greedy":
        hyp = tokenizer.decode(out["tokens"][row, : out["lengths"][row]])
        nbest = None
      else:
        nbest = [(tokenizer.decode(out["tokens"][row, k, : out["lengths"][row, k]]),
                  float(out["scores"][row, k]))
                 for k in range(out["tokens"].shape[1]) if is_live(out["scores"][row, k])]
        hyp = nbest[0][0] if nbest else ""
      ref = str(batch["texts"][row])
      refs.append(ref)
      hyps.append(hyp)
      rows.append({"id": str(batch["ids"][row]), "speaker": str(batch["speakers"][row]),
                   "accent": str(batch["accents"][row]),
                   "condition": str(batch["conditions"][row]), "reference": ref, "hypothesis": hyp,
                   **({"nbest": nbest} if nbest is not None else {}),
                   **({"latency_ms": 1000 * float(seconds[row])} if seconds is not None else {})})
    if progress is not None:
      progress(len(rows))
  summary = error_rates(refs, hyps)
  for row, errors in zip(rows, utterance_word_errors(refs, hyps)):
    row.update(word_errors=errors, num_words=len(row["reference"].split()))
  summary.update(
      flops_per_frame=encoder_flops / max(frames, 1),
      flops_per_second=(encoder_flops + decoding_flops) / max(audio_s, 1e-9),
      rtf=decode_s / max(audio_s, 1e-9),
      audio_seconds=audio_s, decoder=decoder,
      per_accent=grouped_wer(refs, hyps, [r["accent"] or "unknown" for r in rows]),
      per_speaker=grouped_wer(refs, hyps, [r["speaker"] for r in rows]),
      per_condition=per_condition_wer(refs, hyps, [r["condition"] for r in rows]))
  if fast_frames is not None:
    summary["fast_fraction"] = fast_frames / max(frames, 1)
  if open_frames is not None:
    summary["open_fraction"] = open_frames / max(frames, 1)
  if executed_flops is not None:
    summary["flops_per_frame_executed"] = executed_flops / max(frames, 1)
  return summary, rows


def per_condition_wer(refs: list[str], hyps: list[str], conds: list[str]) -> dict:
  """`{facet: {value: WER}}` over the utterances whose source records its acoustic condition
  (`asr.data.conditions`): noise kind, SNR band, reverberation, whisper."""
  known = [(r, h, facets(c)) for r, h, c in zip(refs, hyps, conds) if c]
  names = sorted({name for _, _, f in known for name in f})
  return {name: grouped_wer([r for r, _, _ in known], [h for _, h, _ in known],
                            [f.get(name, "") for _, _, f in known]) for name in names}


HYPOTHESIS_COLUMNS = ("id", "speaker", "accent", "condition", "reference", "hypothesis",
                      "word_errors", "num_words")


def write_hypotheses(path, rows: list[dict]) -> None:
  """The per-utterance rows as a tab-separated file, one line per utterance."""
  with open(path, "w") as f:
    columns = HYPOTHESIS_COLUMNS + (("latency_ms",) if rows and "latency_ms" in rows[0] else ())
    f.write("\t".join(columns) + "\n")
    for r in rows:
      f.write("\t".join(str(r[c]) for c in columns) + "\n")
