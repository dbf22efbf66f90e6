"""Input pipeline: bucketing, exactly-once epochs, determinism, resume, sharding, bad input."""

import collections
import itertools

import numpy as np
import pytest

from asr.data.pipeline import Batches, PipelineConfig
from asr.data.validation import BadExampleError
from asr.tokenizer import CharTokenizer

CFG = PipelineConfig(batch_size=8, bucket_seconds=(1.0, 2.0, 3.0, 4.0, 8.0), shuffle_buffer=64)


def _ids(batch):
  return [i for i in batch["ids"] if i]


def _epoch_ids(batches):
  return [i for b in batches for i in _ids(b)]


def _fake_examples(n=37, bad=()):
  """`examples(epoch)` over n in-memory utterances; epoch-dependent order, like a shuffled source."""
  rng = np.random.default_rng(0)
  base = []
  for i in range(n):
    seconds = rng.uniform(0.3, 5.5)
    audio = (rng.standard_normal(int(seconds * 16000)) * 3000).astype(np.int16)
    base.append({"id": f"utt{i:03d}", "audio": audio, "text": "hello world", "speaker": f"s{i % 5}",
                 "accent": "us"})
  for i, change in bad:
    base[i] = {**base[i], **change}

  def examples(epoch):
    order = np.random.default_rng([7, epoch]).permutation(n)
    return iter([base[i] for i in order])
  return examples


def test_bucket_shapes_are_few_and_every_example_appears_once_per_epoch(tiny_source):
  cfg = PipelineConfig(batch_size=16)
  batches = Batches.from_source(tiny_source, "train", CharTokenizer(), cfg, seed=0, num_epochs=2)
  shapes = collections.Counter()
  per_epoch = collections.defaultdict(list)
  for batch in batches:
    b, t, f = batch["features"].shape
    shapes[(t, batch["labels"].shape[1])] += 1
    per_epoch[batches.state()["epoch"]].extend(_ids(batch))
    assert b == 16 and f == 80 and batch["labels"].shape[0] == 16
    n = batch["feature_lengths"]
    assert np.all(n <= t) and np.all(batch["label_lengths"] <= batch["labels"].shape[1])
    assert np.all((n == 0) == (batch["ids"] == ""))  # padding rows, and only they, are empty
  assert len(shapes) <= 8
  assert set(shapes) <= set(batches.feature_shapes())
  all_ids = {f"train-{i:06d}" for i in range(tiny_source.splits["train"])}
  for epoch in (0, 1):
    assert sorted(per_epoch[epoch]) == sorted(all_ids)
  assert per_epoch[0] != per_epoch[1]  # reshuffled per epoch


def test_labels_and_features_match_the_examples(tiny_source):
  tok = CharTokenizer()
  texts = {ex["id"]: ex["text"] for ex in tiny_source.examples("dev")}
  lengths = {ex["id"]: len(ex["audio"]) for ex in tiny_source.examples("dev")}
  batches = Batches.from_source(tiny_source, "dev", tok, PipelineConfig(batch_size=8),
                                shuffle=False, num_epochs=1)
  for batch in batches:
    for row, uid in enumerate(batch["ids"]):
      if not uid:
        continue
      n = batch["label_lengths"][row]
      assert tok.decode(batch["labels"][row, :n]) == texts[uid] == batch["texts"][row]
      assert not batch["labels"][row, n:].any()
      assert batch["audio_lengths"][row] == lengths[uid]
      assert batch["feature_lengths"][row] == 1 + (lengths[uid] - 400) // 160


def test_same_seed_same_batches_other_seed_other_order(tiny_source):
  def first_ids(seed):
    b = Batches.from_source(tiny_source, "train", CharTokenizer(), CFG, seed=seed, num_epochs=1,
                            features=None)
    return _epoch_ids(b)
  assert first_ids(3) == first_ids(3)
  assert first_ids(3) != first_ids(4)


def test_resume_continues_exactly_where_an_uninterrupted_run_is():
  cfg = PipelineConfig(batch_size=4, bucket_seconds=(2.0, 4.0, 6.0), prefetch_batches=3)
  cfg_skip = PipelineConfig(**{**cfg.__dict__, "on_bad_example": "skip"})
  make = lambda: Batches(_fake_examples(bad=[(5, {"text": ""})]), CharTokenizer(), cfg_skip,
                         num_epochs=3, features=None)
  full = [(_ids(b), b["audio"].sum()) for b in make()]
  for stop in (1, 7, len(full) // 3 + 1, len(full) - 1):
    first = make()
    seen = [(_ids(next(first)), None) for _ in range(stop)]
    state = first.state()
    first.close()
    resumed = make()
    resumed.restore(state)
    rest = [(_ids(b), b["audio"].sum()) for b in resumed]
    assert [s[0] for s in seen] + [r[0] for r in rest] == [f[0] for f in full]
    assert [r[1] for r in rest] == [f[1] for f in full[stop:]]
    assert resumed.problems.counts == collections.Counter({"empty_transcript": 3})


def test_hosts_agree_on_every_bucket_and_their_rows_make_the_single_host_batch(tiny_source):
  import dataclasses
  make = lambda cfg, hosts: Batches.from_source(tiny_source, "dev", CharTokenizer(), cfg, seed=1,
                                                num_epochs=1, features=None, hosts=hosts)
  single = list(make(dataclasses.replace(CFG, batch_size=2 * CFG.batch_size), (0, 1)))
  per_host = [list(make(CFG, (index, 2))) for index in range(2)]
  assert len(per_host[0]) == len(per_host[1]) == len(single) > 3
  shapes = {b["audio"].shape for b in single}
  assert len(shapes) > 1  # several buckets, so agreeing on them is not a coincidence
  for whole, first, second in zip(single, *per_host):
    assert first["audio"].shape == second["audio"].shape == (CFG.batch_size,
                                                             whole["audio"].shape[1])
    for key in ("audio", "audio_lengths", "labels", "label_lengths", "ids"):
      np.testing.assert_array_equal(np.concatenate([first[key], second[key]]), whole[key])


BAD_CASES = [
    ("empty_audio", {"audio": np.zeros(0, np.int16)}),
    ("empty_audio", {"audio": np.zeros(8000, np.int16)}),
    ("unreadable_audio", {"audio": np.full(8000, np.nan, np.float32)}),
    ("unreadable_audio", {"audio": np.ones((2, 8000), np.int16)}),
    ("too_long", {"audio": np.ones(16000 * 9, np.int16)}),
    ("too_short", {"audio": np.ones(399, np.int16)}),
    ("empty_transcript", {"text": "  "}),
    ("out_of_vocabulary", {"text": "hello wörld"}),
    ("transcript_too_long", {"text": "a" * 500}),
]


@pytest.mark.parametrize("problem, change", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_example_raises_naming_the_utterance_and_problem(problem, change):
  batches = Batches(_fake_examples(bad=[(11, change)]), CharTokenizer(), CFG, num_epochs=1,
                    features=None)
  with pytest.raises(BadExampleError, match=f"'utt011': {problem}") as err:
    list(batches)
  assert err.value.utterance_id == "utt011" and err.value.problem == problem


@pytest.mark.parametrize("problem, change", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_example_is_skipped_and_counted_when_configured(problem, change):
  cfg = PipelineConfig(**{**CFG.__dict__, "on_bad_example": "skip"})
  batches = Batches(_fake_examples(bad=[(11, change), (30, change)]), CharTokenizer(), cfg,
                    num_epochs=1, features=None)
  ids = _epoch_ids(batches)
  assert sorted(ids) == sorted(f"utt{i:03d}" for i in range(37) if i not in (11, 30))
  assert batches.problems.as_metrics() == {f"skipped/{problem}": 2}


def test_other_sample_rate_is_named():
  batches = Batches(_fake_examples(), CharTokenizer(), CFG, num_epochs=1, features=None,
                    source_sample_rate=8000)
  with pytest.raises(BadExampleError, match="sample_rate: 8000 Hz, expected 16000 Hz"):
    next(batches)


def test_all_bad_epoch_is_an_error_not_an_empty_run():
  cfg = PipelineConfig(**{**CFG.__dict__, "on_bad_example": "skip"})
  examples = _fake_examples(n=3, bad=[(i, {"text": ""}) for i in range(3)])
  with pytest.raises(ValueError, match="no usable example"):
    list(Batches(examples, CharTokenizer(), cfg, num_epochs=1, features=None))


def test_config_rejects_too_many_buckets():
  with pytest.raises(ValueError, match="bucket_seconds"):
    PipelineConfig(bucket_seconds=tuple(range(1, 11)))


def test_fresh_audio_stream_is_new_each_epoch_deterministic_and_resumes_exactly(tiny_source):
  """Epoch 0 is the built split; epoch 1 is as many utterances never played (past the corpus and
  past the ones kept for the new-sentence evaluation), by the training speakers, the same
  whichever run or worker count makes them, and a run restored inside it sees the same batches."""
  from asr.data import synth_corpus
  spec = synth_corpus.get_spec("tiny")
  cfg = PipelineConfig(batch_size=16, bucket_seconds=(2.5, 3.5, 6.0, 16.0), shuffle_buffer=64)

  def make(workers):
    return Batches.from_source(tiny_source, "train", CharTokenizer(), cfg, seed=1, num_epochs=2,
                               features=None, fresh_workers=workers)
  full = [(_ids(b), int(np.asarray(b["audio"], np.int64).sum())) for b in make(2)]
  ids = [i for b, _ in full for i in b]
  index = lambda i: int(i.rsplit("-", 1)[1])
  first, second = ids[:240], ids[240:]
  assert sorted(map(index, first)) == list(range(240))
  start, stop = synth_corpus.fresh_range(spec, "train", 1)
  assert start >= 240 + synth_corpus.NEW_SENTENCES_RESERVED
  assert sorted(map(index, second)) == list(range(start, stop))  # every one, once
  assert synth_corpus.fresh_range(spec, "train", 2)[0] == stop     # epochs never overlap

  # Resumed inside the fresh epoch, with another worker count: the same batches from there on.
  epoch0_batches = next(k for k in range(len(full)) if index(full[k][0][0]) >= start)
  stop_at = epoch0_batches + 3
  run = make(1)
  seen = [_ids(next(run)) for _ in range(stop_at)]
  state = run.state()
  run.close()
  resumed = make(1)
  resumed.restore(state)
  rest = [(_ids(b), int(np.asarray(b["audio"], np.int64).sum())) for b in resumed]
  assert seen + [r[0] for r in rest] == [f[0] for f in full]
  assert rest == full[stop_at:]


def test_fresh_epochs_are_spoken_by_the_training_speakers_only(tiny_source):
  from asr.data import synth_corpus
  spec = synth_corpus.get_spec("tiny")
  fresh = list(itertools.islice(synth_corpus.fresh_epoch(spec, "train", 3, workers=2), 64))
  train_speakers = {s.speaker_id for s in spec.speakers("train")}
  assert {ex["speaker"] for ex in fresh} <= train_speakers
  held_out = {s.accent for s in spec.speakers("test_accent")}
  assert {ex["accent"] for ex in fresh}.isdisjoint(held_out)
  with pytest.raises(ValueError, match="epoch 0 is the built corpus"):
    synth_corpus.fresh_range(spec, "train", 0)


def test_fresh_audio_from_recorded_speech_is_refused_at_the_start():
  from asr.data.sources import Source
  recorded = Source("librispeech", builder=None, sample_rate=16000)
  with pytest.raises(ValueError, match="librispeech is not generated.*fresh_audio_workers"):
    Batches.from_source(recorded, "train", CharTokenizer(), CFG, fresh_workers=2)
