"""Input pipeline: examples -> validated, tokenized, length-bucketed, padded batches with features.

Batches follow the batch contract every part of the recognizer reads:

  features         [B, T, F] float32   normalized log-mels (10 ms frames), zero past each length
  feature_lengths  [B] int32
  labels           [B, U] int32        0 = blank/pad
  label_lengths    [B] int32
  audio_lengths    [B] int32           samples
  audio            [B, S] int16 PCM (or float32 in [-1, 1]), only when `features=None`
  ids, speakers, accents, texts  [B] str   metadata ('' in padding rows)

Shapes come from a fixed set of at most 8 buckets (audio length -> padded samples and padded
labels), so a jitted step compiles once per bucket. Every example of the split appears exactly
once per epoch: the last partial batch of each bucket is filled with padding rows whose
lengths are 0.

Several hosts (`hosts=(index, count)`): every host reads the same example order, forms the
same global batches of `count * batch_size` and keeps its own `batch_size` rows. So all hosts
agree on every step's bucket (one array shape for `jax.make_array_from_process_local_data`),
and the global batch is the batch one host would form alone at `count * batch_size`. Each host
reads every record; the reader's rate (thousands of utterances per second, BENCHMARKS.md) is
far above what a step consumes.

Order is a pure function of `(seed, epoch)`. `state()` is a small dict to save beside a model
checkpoint; `restore(state)` replays the epoch up to that batch without computing features, so
a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import threading
from typing import Callable, Iterator

import numpy as np

from asr.data import conditions, validation
from asr.data.sources import SYNTH, fresh_epoch
from asr.features import FeatureConfig, featurize, num_frames


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  batch_size: int = 16
  # Upper edges of the audio-length buckets in seconds; the last is the longest audio accepted.
  bucket_seconds: tuple = (2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.5, 16.0)
  # Labels are padded per bucket to ceil(edge * max_chars_per_second) rounded up to 8.
  max_chars_per_second: float = 25.0
  shuffle_buffer: int = 1024
  on_bad_example: str = "raise"   # or "skip" (then counted in `problems`)
  prefetch_batches: int = 4
  sample_rate: int = 16000

  def __post_init__(self):
    edges = self.bucket_seconds
    if not 1 <= len(edges) <= 8 or list(edges) != sorted(set(edges)):
      raise ValueError(f"bucket_seconds must be 1 to 8 increasing edges, got {edges}")
    if self.on_bad_example not in ("raise", "skip"):
      raise ValueError(f"on_bad_example must be 'raise' or 'skip', got {self.on_bad_example!r}")

  @property
  def max_seconds(self) -> float:
    return self.bucket_seconds[-1]

  def bucket_shapes(self) -> list[tuple[int, int]]:
    """(padded audio samples, padded label length) per bucket."""
    return [(int(round(e * self.sample_rate)),
             8 * math.ceil(e * self.max_chars_per_second / 8)) for e in self.bucket_seconds]


@dataclasses.dataclass
class _Item:
  id: str
  audio: np.ndarray
  labels: np.ndarray
  speaker: str
  accent: str
  text: str
  condition: str = ""   # asr.data.conditions.condition of the example


def pad_batch(items: list[_Item], batch_size: int, audio_len: int, label_len: int) -> dict:
  """Stacks up to `batch_size` items into padded arrays; missing rows are padding (length 0).

  Audio stays int16 PCM when every item is int16 (half the bytes to copy and to send to a
  device; `asr.features` scales it), else float32.
  """
  dtype = np.int16 if all(it.audio.dtype == np.int16 for it in items) else np.float32
  audio = np.zeros((batch_size, audio_len), dtype)
  labels = np.zeros((batch_size, label_len), np.int32)
  audio_lengths = np.zeros(batch_size, np.int32)
  label_lengths = np.zeros(batch_size, np.int32)
  meta = {k: np.full(batch_size, "", dtype=object)
          for k in ("ids", "speakers", "accents", "texts", "conditions")}
  for i, it in enumerate(items):
    audio[i, : len(it.audio)] = it.audio if dtype == np.int16 else _as_float(it.audio)
    labels[i, : len(it.labels)] = it.labels
    audio_lengths[i], label_lengths[i] = len(it.audio), len(it.labels)
    meta["ids"][i], meta["speakers"][i], meta["accents"][i], meta["texts"][i] = (
        it.id, it.speaker, it.accent, it.text)
    meta["conditions"][i] = it.condition
  return dict(audio=audio, audio_lengths=audio_lengths, labels=labels,
              label_lengths=label_lengths, **meta)


def _as_float(audio: np.ndarray) -> np.ndarray:
  return audio / np.float32(32768) if audio.dtype == np.int16 else audio.astype(np.float32)


class Batches:
  """Padded, bucketed batches of one split, over epochs, with a savable position.

  Args:
    examples: `examples(epoch) -> iterator of example dicts`; it must give the same order for the
      same epoch (e.g. `functools.partial(Source.examples, split, shuffle_seed=...)`); see
      `from_source`.
    tokenizer: has `encode(text)` and `unknown_characters(text)` (or `encode` raising ValueError).
    features: feature config, or None to keep raw `audio [B, S]` in the batches.
    num_epochs: None for endless training; 1 for evaluation.
    hosts: (this host's index, number of hosts); `cfg.batch_size` is per host.
  """

  def __init__(self, examples: Callable[[int], Iterator[dict]], tokenizer,
               cfg: PipelineConfig = PipelineConfig(), *,
               features: FeatureConfig | None = FeatureConfig(), num_epochs: int | None = None,
               source_sample_rate: int | None = None, hosts: tuple[int, int] = (0, 1)):
    self.cfg, self.tokenizer, self.features = cfg, tokenizer, features
    self.num_epochs = num_epochs
    if not 0 <= hosts[0] < hosts[1]:
      raise ValueError(f"hosts={hosts}: the index must be in [0, count)")
    self.hosts = hosts
    self.global_batch = cfg.batch_size * hosts[1]
    self._examples = examples
    self._shapes = cfg.bucket_shapes()
    self._edges = np.array([s for s, _ in self._shapes])
    self.problems = validation.ProblemCounter()
    self._rate = source_sample_rate or cfg.sample_rate
    self._epoch, self._batch = 0, 0
    self._thread: threading.Thread | None = None
    self._queue: queue.Queue | None = None
    self._stop = threading.Event()

  @classmethod
  def from_source(cls, source, split: str, tokenizer, cfg: PipelineConfig = PipelineConfig(), *,
                  seed: int = 0, shuffle: bool = True, fresh_workers: int = 0,
                  **kwargs) -> "Batches":
    """Batches of `source.examples(split)`, reshuffled per epoch from (seed, epoch) when
    `shuffle`. Pass `hosts=(jax.process_index(), jax.process_count())` to train on several.

    `fresh_workers > 0` (synthetic corpora): only epoch 0 reads the built split; every later
    epoch is as many utterances never played before, synthesized by that many background
    processes while the model trains (`asr.data.sources.fresh_epoch`). Restoring a position
    inside such an epoch synthesizes it again up to that batch. Each host synthesizes the whole
    stream (as each reads every record) and keeps its rows.
    """
    if fresh_workers and not source.name.startswith(SYNTH):
      # At the start, not when the first epoch ends.
      raise ValueError(f"{source.name} is not generated, so it cannot make fresh audio "
                       "(data.fresh_audio_workers is for synth_speech corpora)")

    def examples(epoch: int):
      if fresh_workers and epoch > 0:
        return fresh_epoch(source.name, split, epoch, fresh_workers)
      seed_e = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]) if shuffle else None
      return source.examples(split, shuffle_seed=seed_e, shuffle_buffer=cfg.shuffle_buffer)
    return cls(examples, tokenizer, cfg, source_sample_rate=source.sample_rate, **kwargs)

  # ---- position ----
  def state(self) -> dict:
    """The position after the last batch returned, and the skip counts so far."""
    return {"epoch": self._epoch, "batch": self._batch, "skipped": dict(self.problems.counts)}

  def restore(self, state: dict) -> None:
    self._shutdown()
    self._epoch, self._batch = int(state["epoch"]), int(state["batch"])
    self.problems.counts.clear()
    self.problems.counts.update(state.get("skipped", {}))

  # ---- iteration ----
  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._thread is None:
      self._start()
    item = self._queue.get()
    if isinstance(item, BaseException):
      self._shutdown()
      raise item
    if item is None:
      self._shutdown()
      raise StopIteration
    epoch, index, batch, problems = item
    self.problems.counts.update(problems)
    if batch is None:  # the epoch's trailing skipped examples: nothing to return
      return next(self)
    self._epoch, self._batch = (epoch, index + 1)
    return batch

  def close(self) -> None:
    self._shutdown()

  def _start(self) -> None:
    self._stop.clear()
    self._queue = queue.Queue(maxsize=max(1, self.cfg.prefetch_batches))
    self._thread = threading.Thread(target=self._produce, args=(self._epoch, self._batch),
                                    daemon=True)
    self._thread.start()

  def _shutdown(self) -> None:
    if self._thread is not None:
      self._stop.set()
      while self._thread.is_alive():  # unblock a producer waiting on a full queue
        try:
          self._queue.get(timeout=0.05)
        except queue.Empty:
          pass
      self._thread = None

  def _put(self, item) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def _produce(self, epoch: int, skip: int) -> None:
    try:
      while self.num_epochs is None or epoch < self.num_epochs:
        for index, (bucket, items, problems) in enumerate(self._epoch_batches(epoch)):
          if index < skip:
            continue  # replaying up to a restored position: no padding, no features
          batch = None if items is None else self._finish(bucket, items)
          if not self._put((epoch, index, batch, problems)):
            return
        epoch, skip = epoch + 1, 0
      self._put(None)
    except BaseException as e:  # surfaced in the consumer's thread
      self._put(e)

  # ---- one epoch ----
  def _validate(self, ex: dict):
    """Returns (item, None) or (None, Problem)."""
    problem = validation.check_audio(ex.get("audio"), self._rate,
                                     expected_rate=self.cfg.sample_rate,
                                     max_seconds=self.cfg.max_seconds,
                                     min_samples=(self.features or FeatureConfig()).window)
    text = ex.get("text", "")
    if problem is None:
      unknown = getattr(self.tokenizer, "unknown_characters", None)
      problem = validation.check_transcript(text, unknown or (lambda t: []))
    if problem is not None:
      return None, problem
    try:
      labels = self.tokenizer.encode(text)
    except ValueError as e:
      return None, validation.Problem("out_of_vocabulary", str(e))
    audio = np.asarray(ex["audio"])
    bucket = int(np.searchsorted(self._edges, len(audio)))
    if len(labels) > self._shapes[bucket][1]:
      return None, validation.Problem(
          "transcript_too_long", f"{len(labels)} tokens for {len(audio) / self.cfg.sample_rate:.2f} s "
          f"of audio; this bucket holds at most {self._shapes[bucket][1]} (raise max_chars_per_second)")
    return _Item(ex["id"], audio, labels, ex.get("speaker", ""), ex.get("accent", ""), text,
                 conditions.condition(ex)), None

  def _epoch_batches(self, epoch: int) -> Iterator[tuple[int, list[_Item], dict]]:
    """Yields (bucket, items, problems since the previous batch) for one epoch, full batches as
    they fill, then each bucket's remainder in bucket order."""
    pending: list[list[_Item]] = [[] for _ in self._shapes]
    problems: dict[str, int] = {}
    seen = 0
    for ex in self._examples(epoch):
      seen += 1
      item, problem = self._validate(ex)
      if problem is not None:
        if self.cfg.on_bad_example == "raise":
          raise validation.BadExampleError(ex.get("id", f"#{seen}"), problem.name, problem.detail)
        problems[problem.name] = problems.get(problem.name, 0) + 1
        continue
      bucket = int(np.searchsorted(self._edges, len(item.audio)))
      pending[bucket].append(item)
      if len(pending[bucket]) == self.global_batch:
        yield bucket, pending[bucket], problems
        pending[bucket], problems = [], {}
    if seen == 0:
      raise ValueError(f"epoch {epoch}: the source yielded no examples")
    emitted = False
    for bucket, items in enumerate(pending):
      if items:
        yield bucket, items, problems
        problems, emitted = {}, True
    if problems:
      if not emitted and seen == sum(problems.values()):
        raise ValueError(f"epoch {epoch}: no usable example among {seen}; skipped {problems}")
      yield -1, None, problems  # bad examples after the last batch: counted, no batch

  def _finish(self, bucket: int, items: list[_Item]) -> dict:
    audio_len, label_len = self._shapes[bucket]
    b, (index, _) = self.cfg.batch_size, self.hosts
    batch = pad_batch(items[index * b:(index + 1) * b], b, audio_len, label_len)
    if self.features is not None:
      feats, lengths = featurize(batch.pop("audio"), batch["audio_lengths"], self.features)
      batch["features"] = np.asarray(feats)
      batch["feature_lengths"] = np.asarray(lengths)
    return batch

  def feature_shapes(self) -> list[tuple[int, int]]:
    """(padded frames, padded labels) per bucket: every shape a batch can have."""
    cfg = self.features or FeatureConfig()
    return [(int(num_frames(s, cfg)), u) for s, u in self._shapes]
