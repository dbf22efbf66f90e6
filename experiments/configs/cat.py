"""The compute-amortized Transformer transducer (Xie et al., "Compute Cost Amortized Transformer
for Streaming ASR", Interspeech 2022, arXiv 2207.02393) against the ungated model and against
attention over a sliding window, on the `small` Transformer recipe.

  asr-train --config experiments/configs/transformer.py:small --workdir workdirs/transformer_small
  asr-sweep experiments/sweeps/cat.yaml --local                          # the table
  asr-train --config experiments/configs/cat.py:gated_l2 --workdir W     # one row
  asr-train --config experiments/configs/cat.py:tiny,gated_l2 --workdir W   # tests, CI

`arg` is `[SIZE,]VARIANT`. SIZE: `small` (the default: every row fine-tunes the trained
`transformer.py:small` run, BASE_RUN, for the same `train.num_steps` on `synth_speech/full`,
the ungated control included, so each row differs from it by its mechanism only) or `tiny`
(tests, CI: from scratch on the tiny corpus). VARIANT (`gated_l2` when only a size is given):

  ungated      the trained Transformer, fine-tuned as the others are: the reference
  gated_l1-4   per-frame gates on every attention and feed-forward sub-block
               (`asr/models/gates.py`, `model.transformer.gates`), trained with the `compute`
               term `lambda * E[encoder FLOPs per second] / ungated's` at `lambda` =
               LAMBDAS[0..3]; hard gates with the Gumbel-sigmoid's gradient (straight-through),
               annealed by the AmNet schedules (temperature 1 -> 0.1 over 0-60% of the run,
               the noise fading over 40-80%)
  window_w1-3  attention over a sliding window: `left_chunks` = WINDOWS[0..2] chunks of left
               context instead of 8 (the chunk's look-ahead kept), costed by the same accounting
               (each frame's visible keys)
"""

import dataclasses

import ml_collections

from experiments.configs import transformer
from experiments.configs.recipe import anneal_arbitrators, fine_tune, size_and_variant

SIZES = ("tiny", "small")
# gated_l1 .. gated_l4: the compute term's weight. Tuned on seed 0 over 256 dev utterances
# (BENCHMARKS.md, issue 38): 1 saved 20% of the encoder's FLOPs, 2 about 40%, 8 72% (and the
# WER with it).
LAMBDAS = (1.0, 2.0, 4.0, 8.0)
WINDOWS = (4, 1, 0)                # window_w1 .. window_w3: chunks of left context
VARIANTS = ("ungated",) + tuple(f"gated_l{i + 1}" for i in range(len(LAMBDAS))) + tuple(
    f"window_w{i + 1}" for i in range(len(WINDOWS)))
BASE_RUN = "workdirs/transformer_small"   # transformer.py:small's run
FINE_TUNE_STEPS = 600
# Every parameter but the arbitrators' (new, absent from the ungated checkpoint) loads from it.
NOT_ARBITRATORS = r"^(?!.*/arbitrator/)"


def get_config(arg: str = "gated_l2") -> ml_collections.ConfigDict:
  size, variant = size_and_variant("cat.py", arg, SIZES, VARIANTS, "gated_l2")
  c = transformer.get_config(size or "small")
  c.method = variant
  c.family = f"transformer-rnnt-{variant.split('_')[0]}"   # the report's curves
  steps = c.train.get_ref("num_steps")
  if c.variant == "small":   # evaluated on all 2,000 dev utterances
    fine_tune(c, BASE_RUN, FINE_TUNE_STEPS, peak_lr=5e-4, warmup_steps=50,
              checkpoint_every=200)
  t = c.model.transformer
  if variant.startswith("gated"):
    t.gates = True
    t.gate_hidden = 32
    t.gate_block_input = True
    # Hard gates forward (the ones evaluation runs), the Gumbel-sigmoid's gradient backward: at
    # lambda 2, 37% of the FLOPs saved at 23.4% WER, where Gumbel-sigmoid gates saved 43% at
    # 27.5% (seed 0, 256 dev utterances; the ungated control 15.0%).
    t.gate_estimator = "straight_through"
    t.gate_bias_init = 3.0
    if c.init_from:
      c.init_from_keys = NOT_ARBITRATORS
    c.imports = list(c.get("imports", ())) + ["asr.losses.cost"]
    c.loss.compute = ml_collections.ConfigDict(dict(
        weight=LAMBDAS[int(variant[-1]) - 1], hinge=False,
        budget_flops_per_second=transformer_flops_per_second(c)))
    anneal_arbitrators(c, steps)
  elif variant.startswith("window"):
    t.left_chunks = WINDOWS[int(variant[-1]) - 1]
  return c


def transformer_flops_per_second(c: ml_collections.ConfigDict) -> float:
  """Encoder FLOPs per second of audio of the config's Transformer without gates, each frame
  seeing its whole window (`left_chunks + 1` chunks; an utterance's first second sees fewer),
  counted as the encoder counts them, of a shape-only model: about 85 MFLOP/s for `small`."""
  from flax import nnx
  from asr.models.conformer import TransformerConfig, TransformerEncoder
  options = dict(c.model.transformer.to_dict(), gates=False)
  cfg = TransformerConfig(**{k: tuple(v) if isinstance(v, list) else v
                             for k, v in options.items()})
  enc = nnx.eval_shape(lambda: TransformerEncoder(c.model.num_mels, cfg, rngs=nnx.Rngs(0)))
  keys = (cfg.left_chunks + 1) * cfg.chunk
  macs = enc.subsampling_macs() + sum(
      unit.macs_per_frame(keys) if name == "attention" else unit.macs_per_frame()
      for block in enc.blocks for name, _, unit in block.units())
  return 2.0 * macs / enc.frame_seconds
