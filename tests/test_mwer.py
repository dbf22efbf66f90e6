"""The MWER term: its value's invariances, duplicates, its gradient against central
differences on a tiny model, the semi-on-the-fly schedule across a resume, and the recipe."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from asr import features as F
from asr.losses.mwer import MinimumWordErrorRate, distinct, expected_errors
from asr.models.context import Context
from asr.tokenizer import CharTokenizer
from asr.training.objective import LossInputs


def test_a_constant_added_to_every_log_probability_leaves_the_loss_unchanged():
  rng = np.random.default_rng(0)
  logp = jnp.asarray(rng.normal(size=(5, 4)) * 3)
  errors = jnp.asarray(rng.integers(0, 6, (5, 4)))
  valid = jnp.asarray(rng.random((5, 4)) < 0.8).at[:, 0].set(True)
  base, _ = expected_errors(logp, errors, valid)
  shifted, _ = expected_errors(logp + 17.5, errors, valid)
  np.testing.assert_allclose(shifted, base, rtol=1e-5, atol=1e-6)
  # By hand, one list: P^ = (0.5, 0.25, 0.25), errors (1, 3, 5), mean 3 -> -0.5.
  loss, post = expected_errors(jnp.log(jnp.array([[2.0, 1.0, 1.0]])), jnp.array([[1, 3, 5]]),
                               jnp.ones((1, 3), bool))
  np.testing.assert_allclose(loss, [0.5 * -2 + 0.25 * 2 * 0 + 0.25 * 2], atol=1e-6)
  np.testing.assert_allclose(post, [[0.5, 0.25, 0.25]], atol=1e-6)


def test_moving_probability_to_the_fewest_errors_lowers_the_loss():
  errors = jnp.array([[4, 1, 2, 3]])
  valid = jnp.ones((1, 4), bool)
  losses = [float(expected_errors(jnp.array([[0.0, a, 0.0, 0.0]]), errors, valid)[0][0])
            for a in (-2.0, 0.0, 1.0, 3.0)]
  assert losses == sorted(losses, reverse=True) and losses[-1] < 0 < losses[0]
  # Off the list, a hypothesis counts for nothing, whatever its probability or errors.
  off = jnp.array([[True, True, True, False]])
  a, _ = expected_errors(jnp.array([[0.0, 1.0, 2.0, 9.0]]), errors, off)
  b, _ = expected_errors(jnp.array([[0.0, 1.0, 2.0, -9.0]]), errors.at[0, 3].set(50), off)
  np.testing.assert_allclose(a, b, rtol=1e-6)


def test_duplicates_leave_the_list_keeping_their_first_occurrence():
  tokens = jnp.array([[[3, 4, 0], [3, 4, 0], [3, 0, 0], [3, 4, 0]],
                      [[0, 0, 0], [5, 0, 0], [0, 0, 0], [5, 6, 7]]])
  lengths = jnp.array([[2, 2, 1, 2], [0, 1, 0, 3]])
  np.testing.assert_array_equal(distinct(tokens, lengths),
                                [[True, False, True, False], [True, True, False, True]])
  # A duplicate scored twice would count twice; once off the list, the loss is the
  # de-duplicated list's.
  logp, errors = jnp.log(jnp.array([[0.2, 0.2, 0.6]])), jnp.array([[1, 1, 3]])
  dedup, _ = expected_errors(logp, errors, jnp.array([[True, False, True]]))
  alone, _ = expected_errors(jnp.log(jnp.array([[0.2, 0.6]])), jnp.array([[1, 3]]),
                             jnp.ones((1, 2), bool))
  np.testing.assert_allclose(dedup, alone, rtol=1e-6)


def _tiny_inputs(seed=0):
  """A tiny LSTM transducer, three utterances of noise, and a batch whose references are the
  model's own second-best hypotheses (so the list's word errors differ)."""
  from asr.training.loop import build_model
  from experiments.configs.rnnt import get_config
  model = build_model(get_config("tiny"))
  rng = np.random.default_rng(seed)
  audio = jnp.asarray(rng.standard_normal((3, 12000)) * 0.1, jnp.float32)
  audio_lengths = jnp.array([12000, 9000, 6000])
  feats, lengths = F.log_mel(audio, audio_lengths)
  term = MinimumWordErrorRate(nbest=4, max_symbols=3, max_len=12, mode="on_the_fly")
  term.attach(CharTokenizer())
  encoded = model.encode(feats, lengths)
  tokens, hyp_lengths, _ = term.nbest_lists(model, encoded, jnp.zeros((3, 12), jnp.int32))
  batch = {"audio": audio, "audio_lengths": audio_lengths, "labels": tokens[:, 1],
           "label_lengths": hyp_lengths[:, 1]}
  return model, term, batch, (feats, lengths)


def _term_value(model, term, batch, feats_lengths):
  encoded = model.encode(*feats_lengths, Context())
  nll = model.score(encoded, batch["labels"], batch["label_lengths"])
  x = LossInputs(model=model, params=None, batch=batch, encoded=encoded, nll=nll,
                 is_real=batch["audio_lengths"] > 0, num_labels=jnp.float32(1.0),
                 schedules={}, rng=jax.random.PRNGKey(0))
  return term(x, {})


def test_the_gradient_matches_central_differences_on_a_tiny_model():
  model, term, batch, fl = _tiny_inputs()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def term_value(p):
    return _term_value(nnx.merge(graphdef, p, rest), term, batch, fl)
  f = jax.jit(lambda p: term_value(p)[0])
  (value, metrics), grad = jax.jit(jax.value_and_grad(term_value, has_aux=True))(params)
  assert float(metrics["top_wer"]) > 0 and float(metrics["oracle_wer"]) == 0  # by design
  assert abs(float(value)) > 1e-4
  leaves, treedef = jax.tree.flatten(params)
  rng = np.random.default_rng(1)
  direction = jax.tree.unflatten(treedef, [jnp.asarray(rng.standard_normal(np.shape(x)),
                                                       jnp.float32) for x in leaves])
  norm = float(jnp.sqrt(sum(jnp.sum(d ** 2) for d in jax.tree.leaves(direction))))
  direction = jax.tree.map(lambda d: d / norm, direction)
  analytic = float(sum(jnp.sum(g * d) for g, d in zip(jax.tree.leaves(grad),
                                                      jax.tree.leaves(direction))))
  eps = 1e-2
  plus = f(jax.tree.map(lambda p, d: p + eps * d, params, direction))
  minus = f(jax.tree.map(lambda p, d: p - eps * d, params, direction))
  numeric = float(plus - minus) / (2 * eps)
  assert analytic == pytest.approx(numeric, rel=0.05, abs=1e-5)
  assert abs(analytic) > 1e-4


def test_semi_on_the_fly_searches_every_kth_step_and_resumes_on_schedule():
  """Steps 0, 3, 6 search and carry the term; the others are plain RNN-T steps (the loss is
  the other terms' alone); a state restored at step 5 keeps to the schedule."""
  from tests.helpers import tiny_step
  from experiments.configs.rnnt import get_config
  import asr.losses.mwer  # noqa: F401 (registers the term)
  c = get_config("tiny")
  c.loss.mwer = ml_collections.ConfigDict(dict(weight=1.0, nbest=2, max_symbols=2,
                                               mode="semi_on_the_fly", every=3))
  c, state, step, batch, _ = tiny_step(c)
  step = jax.jit(step)
  start = jax.tree.map(jnp.copy, state)
  decoded = []
  for s in range(5):
    state, m = step(state, batch)
    decoded.append(float(m["loss/mwer/decoded"]))
    if not decoded[-1]:
      others = sum(float(m[k]) * float(m[f"loss/{k[7:]}"]) for k in m
                   if k.startswith("weight/") and k != "weight/mwer")
      assert float(m["loss/mwer"]) == 0 and float(m["loss"]) == pytest.approx(others, rel=1e-6)
    else:
      assert float(m["loss/mwer/hypotheses"]) >= 1
  assert decoded == [1, 0, 0, 1, 0]
  # A resumed run holds the step counter its checkpoint stored: the schedule follows it, not
  # the number of steps this process has taken (step-0 parameters, counter 5).
  restored = dict(start, step=jnp.asarray(5, jnp.int32))
  after = []
  for s in range(2):
    restored, m = step(restored, batch)
    after.append(float(m["loss/mwer/decoded"]))
  assert after == [0, 1]


def test_options_are_checked_and_words_need_the_tokenizer():
  with pytest.raises(ValueError, match="mode must be one of on_the_fly, semi_on_the_fly"):
    MinimumWordErrorRate(mode="offline")
  with pytest.raises(ValueError, match="nbest >= 2 and beam >= nbest"):
    MinimumWordErrorRate(nbest=4, beam=2)
  model, term, batch, fl = _tiny_inputs()
  term.table = None
  with pytest.raises(ValueError, match="counts words with the run's tokenizer"):
    _term_value(model, term, batch, fl)


def test_tiny_recipe_trains_with_mwer_and_reports_the_beam_wer(tiny_data_dir, tmp_path):
  from asr.training.loop import train
  from experiments.configs import mwer
  c = mwer.get_config("tiny,mwer")
  c.data.data_dir, c.wandb.mode = tiny_data_dir, "disabled"
  c.data.bucket_seconds = (6.0,)          # one shape: one compilation of the step
  c.train.num_steps = c.train.eval_every = c.train.checkpoint_every = c.train.log_every = 8
  c.train.eval_max_batches = 1
  train(c, tmp_path / "mwer")
  final = json.loads((tmp_path / "mwer" / "final.json").read_text())
  assert 0 <= final["wer_beam"] and final["per_accent_beam"]
  records = [json.loads(l) for l in (tmp_path / "mwer" / "metrics.jsonl").read_text().splitlines()]
  trained = [r for r in records if "train/loss/mwer" in r]
  assert trained and all(np.isfinite(r["train/loss"]) for r in trained)
  # A search on every EVERY-th step of the 8 (the recipe's schedule, steps 0, EVERY, ...).
  assert trained[-1]["train/loss/mwer/decoded"] == pytest.approx(1 / mwer.EVERY)
