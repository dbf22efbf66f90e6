"""Error rates: WER and CER through jiwer, with substitutions, deletions, insertions, groups;
the summary of per-utterance latencies."""

from __future__ import annotations

import collections

import jiwer
import numpy as np


def error_rates(references: list[str], hypotheses: list[str]) -> dict:
  """Corpus-level WER/CER and word-level S/D/I counts. Empty references are not allowed."""
  if not references:
    raise ValueError("no utterances to score")
  words = jiwer.process_words(references, hypotheses)
  chars = jiwer.process_characters(references, hypotheses)
  return {"wer": words.wer, "cer": chars.cer, "substitutions": words.substitutions,
          "deletions": words.deletions, "insertions": words.insertions,
          "num_utterances": len(references),
          "num_words": sum(len(r.split()) for r in references)}


def utterance_word_errors(references: list[str], hypotheses: list[str]) -> list[int]:
  """Word errors (substitutions + deletions + insertions) of each utterance; they sum to the
  corpus counts of `error_rates`."""
  errors = []
  for chunks in jiwer.process_words(references, hypotheses).alignments:
    errors.append(sum(max(c.ref_end_idx - c.ref_start_idx, c.hyp_end_idx - c.hyp_start_idx)
                      for c in chunks if c.type != "equal"))
  return errors


def grouped_wer(references: list[str], hypotheses: list[str], groups: list[str]) -> dict:
  """WER per group (accent, speaker), each pooled over its utterances."""
  by = collections.defaultdict(lambda: ([], []))
  for r, h, g in zip(references, hypotheses, groups):
    by[g][0].append(r)
    by[g][1].append(h)
  return {g: jiwer.wer(rs, hs) for g, (rs, hs) in sorted(by.items())}


def latency_summary(latency_s) -> dict:
  """Per-utterance latencies (seconds) -> `latency_ms_mean`, `_p50`, `_p90`, `_max` (None
  for none)."""
  ms = 1000.0 * np.asarray(latency_s, np.float64)
  if ms.size == 0:
    return {f"latency_ms_{k}": None for k in ("mean", "p50", "p90", "max")}
  return {"latency_ms_mean": float(ms.mean()), "latency_ms_p50": float(np.percentile(ms, 50)),
          "latency_ms_p90": float(np.percentile(ms, 90)), "latency_ms_max": float(ms.max())}
