"""Per-frame gates on the Transformer's and Conformer's residual units (`asr.models.gates`, the
compute-amortized Transformer): open gates are the ungated encoder exactly, closed ones leave
the residual stream as it was, hard gates stream as the whole utterance, FLOPs against a hand
count that charges skipped frames what other frames still read, the estimators, and the
recipe (`experiments/configs/cat.py`)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asr.models import ConformerConfig, ConformerEncoder, TransformerConfig, TransformerEncoder
from asr.models.context import Context
from asr.models.gates import gate_values, shift_gate_threshold
from tests.helpers import randomize

SIZES = dict(dim=16, layers=2, heads=2, ffn_mult=2, chunk=2, left_chunks=2, dropout=0.0)
FAMILIES = {"conformer": (ConformerEncoder, ConformerConfig, dict(conv_kernel=3)),
            "transformer": (TransformerEncoder, TransformerConfig, {})}


def _encoder(family, seed=0, **kw):
  cls, cfg, extra = FAMILIES[family]
  return cls(6, cfg(**{**SIZES, **extra, **kw}), rngs=nnx.Rngs(seed))


def _features(lengths, frames, seed=0):
  x = np.random.default_rng(seed).standard_normal((len(lengths), frames, 6)).astype(np.float32)
  x[np.arange(frames)[None, :] >= np.asarray(lengths)[:, None]] = 0.0
  return jnp.asarray(x), jnp.asarray(lengths, jnp.int32)


def _gated_copy(plain, family, **kw):
  """A gated encoder holding `plain`'s weights (its arbitrators as initialized: all open)."""
  gated = _encoder(family, seed=7, gates=True, **kw)
  nnx.update(gated, nnx.state(plain))
  return gated


def _set_heads(enc, biases):
  """Every arbitrator kernel to zero (the trunk's output is then tanh(0) = 0) and each block's
  head biases to `biases[block]`: gates fixed per block and unit."""
  enc.arbitrator.hidden.kernel[...] = jnp.zeros_like(enc.arbitrator.hidden.kernel[...])
  enc.arbitrator.hidden.bias[...] = jnp.zeros_like(enc.arbitrator.hidden.bias[...])
  for block, b in zip(enc.blocks, biases):
    block.arbitrator.out.kernel[...] = jnp.zeros_like(block.arbitrator.out.kernel[...])
    block.arbitrator.out.bias[...] = jnp.asarray(b, jnp.float32)
    if block.arbitrator.from_input is not None:
      k = block.arbitrator.from_input.kernel
      k[...] = jnp.zeros_like(k[...])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_open_gates_are_the_ungated_encoder_exactly(family):
  plain = randomize(_encoder(family), seed=1, scale=0.4)
  gated = _gated_copy(plain, family, gate_block_input=True)
  x, n = _features([37, 20], 37)
  a, b = plain(x, n), gated(x, n)
  valid = np.arange(a.frames.shape[1])[None, :] < np.asarray(a.lengths)[:, None]
  np.testing.assert_array_equal(np.asarray(b.aux["open"]), valid * 1.0)     # every gate open
  np.testing.assert_array_equal(np.asarray(b.frames), np.asarray(a.frames))
  np.testing.assert_array_equal(np.asarray(b.flops), np.asarray(a.flops)
                                + valid * 2.0 * gated.arbitrator_macs())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_closed_gates_leave_the_residual_stream_unchanged(family):
  enc = randomize(_encoder(family, gates=True), seed=2, scale=0.4)
  units = len(enc.cfg.layout)
  _set_heads(enc, [[-5.0] * units] * enc.cfg.layers)
  x, n = _features([37, 20], 37)
  notes = {}
  out = enc(x, n, Context(observe=lambda name, v: notes.setdefault(name, v)))
  assert not np.asarray(out.aux["open"]).any()
  before = notes["encoder/subsampling"]
  for i in range(enc.cfg.layers):
    for name, _ in enc.cfg.layout:   # every unit added nothing to the block's input
      np.testing.assert_array_equal(np.asarray(notes[f"encoder/blocks/{i}/{name}"]),
                                    np.asarray(before))
    before = notes[f"encoder/blocks/{i}"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("chunks_per_step", [1, 3])
def test_hard_gates_stream_as_the_whole_utterance(family, chunks_per_step):
  enc = randomize(_encoder(family, gates=True, gate_block_input=True), seed=3, scale=0.8)
  x, n = _features([53, 40, 7], 53)
  full = enc(x, n)
  gates = np.concatenate([np.asarray(g) for g in full.aux["gates"].values()], -1)
  valid = np.arange(gates.shape[1])[None, :] < np.asarray(full.lengths)[:, None]
  assert 0.2 < gates[valid].mean() < 0.8        # a mixture of open and closed sub-blocks
  size = enc.stream_multiple * chunks_per_step
  padded = jnp.pad(x, ((0, 0), (0, -x.shape[1] % size), (0, 0)))
  state, outs = enc.init_state(3), []
  step = nnx.jit(lambda e, s, f, k: e.step(s, f, k))
  for start in range(0, padded.shape[1], size):
    out, state = step(enc, state, padded[:, start:start + size], jnp.clip(n - start, 0, size))
    outs.append(out)
  t = full.frames.shape[1]
  cat = lambda f: np.concatenate([np.asarray(f(o)) for o in outs], 1)[:, :t]
  np.testing.assert_allclose(cat(lambda o: o.frames), np.asarray(full.frames), atol=1e-5)
  np.testing.assert_array_equal(cat(lambda o: o.flops), np.asarray(full.flops))
  for name, g in full.aux["gates"].items():
    np.testing.assert_array_equal(cat(lambda o: o.aux["gates"][name]), np.asarray(g))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_gate_threshold_opens_exactly_the_units_whose_logit_is_above_it(family):
  plain = randomize(_encoder(family), seed=1, scale=0.4)
  gated = randomize(_encoder(family, gates=True), seed=3, scale=0.8)
  nnx.update(gated, nnx.state(plain))        # the same units; random arbitrators
  x, n = _features([53, 40, 7], 53)
  units = lambda out, key: np.stack([np.asarray(a[name][key]) for a in out.aux["units"]
                                     for name, _ in gated.cfg.layout], -1)   # [B, T', L * U]
  base = gated(x, n)
  # Without the block's input the logits are the trunk's alone: the same whatever is open.
  logits = units(base, "gate_logit")
  valid = np.arange(logits.shape[1])[None, :] < np.asarray(base.lengths)[:, None]
  t = float(np.median(logits[valid]))
  assert shift_gate_threshold(gated, t) == gated.cfg.layers
  shifted = gated(x, n)
  np.testing.assert_array_equal(units(shifted, "gate")[valid], (logits[valid] > t) * 1.0)
  assert 0.3 < units(shifted, "gate")[valid].mean() < 0.7
  assert float(shifted.flops.sum()) != float(base.flops.sum())
  # A threshold below every logit opens every gate: the ungated encoder's frames exactly.
  shift_gate_threshold(gated, -100.0 - t)
  np.testing.assert_array_equal(np.asarray(gated(x, n).frames), np.asarray(plain(x, n).frames))
  assert not np.array_equal(np.asarray(base.frames), np.asarray(plain(x, n).frames))
  assert shift_gate_threshold(plain, 1.0) == 0          # nothing to shift: asr-eval says so


def test_gated_flops_equal_a_hand_count_including_what_skipped_frames_still_compute():
  # num_mels 6, dim 16, ffn_mult 2, conv_kernel 3, subsampling (2, 2) with kernel 3, chunk 2,
  # one chunk of left context, an arbitrator trunk of 4 units.
  enc = _encoder("conformer", gates=True, left_chunks=1, gate_hidden=4)
  # Block 0: the feed-forward halves open, attention and convolution closed; block 1 the
  # opposite (layout ffn1, attention, conv, ffn2).
  _set_heads(enc, [[5.0, -5.0, -5.0, 5.0], [-5.0, 5.0, 5.0, -5.0]])
  x, n = _features([20], 20)
  out = enc(x, n)
  blocks = {k: np.asarray(v[0]) for k, v in out.aux["flops_by_block"].items()}
  # Subsampling as in tests/test_conformer.py: 1344 MACs, 2688 FLOPs a frame.
  np.testing.assert_array_equal(blocks["subsampling"], np.full(5, 2688.0))
  # Arbitrators: the trunk 4 stacked frames x 6 mels -> 4 (96 MACs), each block's head 4 -> 4
  # gates (16 MACs): 128 MACs.
  np.testing.assert_array_equal(blocks["arbitrator"], np.full(5, 256.0))
  # Feed-forward halves: 1024 MACs when open, nothing when closed.
  np.testing.assert_array_equal(blocks["ffn1"], np.tile([2048.0, 0.0], (5, 1)))
  np.testing.assert_array_equal(blocks["ffn2"], np.tile([2048.0, 0.0], (5, 1)))
  # Attention closed still computes the frame's key and value (16 x 32 MACs) for the frames
  # after it; open: 16 x 48 + 16 x 16 projections plus 2 x 16 a visible key (2, 2, 4, 4, 3).
  keys = np.array([2, 2, 4, 4, 3])
  np.testing.assert_array_equal(blocks["attention"][:, 0], np.full(5, 2 * 512.0))
  np.testing.assert_array_equal(blocks["attention"][:, 1], 2.0 * (1024 + 32 * keys))
  # Convolution closed still computes its GLU input (16 x 32) for the frames after it; open:
  # 16 x 32 + 3 x 16 + 16 x 16 = 816 MACs.
  np.testing.assert_array_equal(blocks["conv"], np.tile([2 * 512.0, 1632.0], (5, 1)))
  np.testing.assert_array_equal(np.asarray(out.flops[0]), 2688 + 256 + 2 * 2048 + 1024 + 1024
                                + 2.0 * (1024 + 32 * keys) + 1632)


def test_estimators_anneal_to_hard_gates_and_straight_through_passes_the_soft_gradient():
  logits = jnp.linspace(-3.0, 3.0, 24).reshape(2, 3, 4)
  np.testing.assert_array_equal(np.asarray(gate_values(logits, Context())),
                                np.asarray(logits > 0, np.float32))
  key = jax.random.key(4)
  ctx = lambda t, s=1.0: Context(train=True, rng=key, schedules=dict(
      arbitrator_temperature=t, arbitrator_noise=s))
  soft = np.asarray(gate_values(logits, ctx(1.0)))
  assert ((soft > 0.02) & (soft < 0.98)).mean() > 0.5       # soft samples at temperature 1
  cold = np.asarray(gate_values(logits, ctx(0.01, 0.0)))   # no noise, nearly zero temperature
  np.testing.assert_allclose(cold, np.asarray(logits > 0, np.float32), atol=1e-3)
  hard = np.asarray(gate_values(logits, ctx(1.0), "straight_through"))
  assert set(np.unique(hard)) <= {0.0, 1.0} and 0 < hard.mean() < 1
  w = jnp.arange(24.0).reshape(2, 3, 4)
  grad = lambda est: jax.grad(lambda l: jnp.sum(w * gate_values(l, ctx(1.0), est)))(logits)
  np.testing.assert_allclose(np.asarray(grad("straight_through")), np.asarray(grad("gumbel")),
                             rtol=1e-6)


def test_expected_compute_grows_with_every_gate_logit():
  # The compute term's gradient closes gates: training FLOPs (the gates' expectation) increase
  # with each block's head bias.
  enc = randomize(_encoder("transformer", gates=True), seed=5, scale=0.4)
  x, n = _features([37, 20], 37)
  ctx = Context(train=True, rng=jax.random.key(0), schedules={"arbitrator_temperature": 0.5})
  graphdef, params, rest = nnx.split(enc, nnx.Param, ...)

  def mean_flops(params):
    return jnp.sum(nnx.merge(graphdef, params, rest)(x, n, ctx).flops) / jnp.sum(n)

  grads = jax.grad(mean_flops)(params)
  for block in grads["blocks"].values():
    assert (np.asarray(block["arbitrator"]["out"]["bias"][...]) > 0).all()


def test_cat_recipe_variants_and_the_gated_model_starts_from_the_ungated_one():
  import asr.losses.cost  # noqa: F401  (registers `compute`, the gated configs' term)
  from asr.training.checkpoint import tree_paths
  from asr.training.loop import build_model, take_stored
  from experiments.configs import cat
  small = {v: cat.get_config(v) for v in cat.VARIANTS}
  assert [small[f"window_w{i + 1}"].model.transformer.left_chunks for i in range(3)] == \
      list(cat.WINDOWS)
  assert [small[f"gated_l{i + 1}"].loss.compute.weight for i in range(4)] == list(cat.LAMBDAS)
  assert all(small[v].init_from == cat.BASE_RUN and small[v].train.num_steps ==
             cat.FINE_TUNE_STEPS for v in cat.VARIANTS)
  with pytest.raises(ValueError, match="unknown variant 'gated_l9'"):
    cat.get_config("gated_l9")
  # Every parameter but the arbitrators' loads from an ungated model's (the warm start's keys).
  ungated = {"params": nnx.state(build_model(cat.get_config("tiny,ungated")), nnx.Param)}
  gated = {"params": nnx.state(build_model(cat.get_config("tiny,gated_l2")), nnx.Param)}
  stored = {p: np.asarray(v) for p, v in tree_paths(ungated)}
  loaded, count = take_stored(gated, stored, cat.NOT_ARBITRATORS)
  paths = dict(tree_paths(loaded))
  assert count == len(stored) and len(paths) > count
  for p, v in paths.items():
    if "/arbitrator/" in p:    # as initialized
      np.testing.assert_array_equal(np.asarray(v), np.asarray(dict(tree_paths(gated))[p]))
    else:
      np.testing.assert_array_equal(np.asarray(v), stored[p])
  with pytest.raises(ValueError, match="arbitrator/.* is not in the checkpoint"):
    take_stored(gated, stored, "")


def test_tiny_gated_model_trains_and_reports_its_open_gates(tiny_data_dir, tmp_path):
  from asr.training.loop import train
  from experiments.configs import cat
  c = cat.get_config("tiny,gated_l4")
  c.data.data_dir, c.wandb.mode = tiny_data_dir, "disabled"
  c.data.bucket_seconds = (6.0,)          # one shape: one compilation of the step
  c.train.num_steps = c.train.eval_every = c.train.checkpoint_every = 10
  c.train.eval_max_batches = 2
  train(c, tmp_path / "gated")
  final = json.loads((tmp_path / "gated" / "final.json").read_text())
  assert 0 < final["open_fraction"] <= 1 and final["flops_per_frame"] > 0
  records = [json.loads(l) for l in (tmp_path / "gated" / "metrics.jsonl").read_text().splitlines()]
  train_records = [r for r in records if "train/loss/compute" in r]
  assert train_records and all(0 <= r["train/open_fraction"] <= 1 for r in train_records)
  assert all(np.isfinite(r["train/loss"]) for r in train_records)
  # asr-eval on the same dev batches at a threshold below every logit (every gate open) and
  # above every logit (every gate closed; 10 steps from open heads leave most gates open, so
  # this is the case an ignored threshold would fail).
  from experiments import evaluate as eval_cli
  summaries = {}
  for t in (-100, 100):
    assert eval_cli.main(["--workdir", str(tmp_path / "gated"), "--split", "dev",
                          "--max-batches", "2", "--gate-threshold", str(t)]) == 0
    summaries[t] = json.loads((tmp_path / "gated" / "eval" / f"dev_greedy_gate{t}.json").read_text())
    assert summaries[t]["gate_threshold"] == t
    assert summaries[t]["num_utterances"] == final["num_utterances"]
  assert summaries[-100]["open_fraction"] == 1.0 and summaries[100]["open_fraction"] == 0.0
  assert summaries[100]["flops_per_frame"] < final["flops_per_frame"] <= \
      summaries[-100]["flops_per_frame"]
