"""The amortized branching encoder (AmNet: Macoskey et al., "Amortized Neural Networks for
Low-Latency Speech Recognition", Interspeech 2021) against single encoders, on the demo's LSTM
transducer and a processor slower than real time.

  asr-train --config experiments/configs/compression.py:pretrain --workdir workdirs/compression_base
  asr-sweep experiments/sweeps/amnet.yaml --local                                # the table
  asr-train --config experiments/configs/amnet.py:amnet_sparse_lamr --workdir W  # one row
  asr-train --config experiments/configs/amnet.py:tiny --workdir W               # tests, CI

`arg` is `[SIZE,]VARIANT`. SIZE: `small` (the default: every row continues the trained LSTM of
`compression.py:pretrain` for the same `train.num_steps`, 1,200, on `synth_speech/full`),
`quick` (the demo's recipe from scratch: `rnnt.py:small` on `synth_speech/small` for 1,200
steps, nothing to pretrain; README's side-by-side, `experiments/sweeps/amnet_quick.yaml`) or
`tiny` (tests, CI: from scratch on the tiny corpus). VARIANT, one of (`amnet_factorized_lamr`
when only a size is given):

  full                   the LSTM encoder, continued: the reference
  sparse                 a single LSTM encoder pruned to SINGLE_SPARSITY zeros (its encoder)
  factorized             a single LSTM encoder whose matrices are factors costing
                         SINGLE_MACS_RATIO of their MACs (SVD of the trained ones)
  amnet_sparse           AmNet (`asr/models/amnet.py`): the trained LSTM as the full branch,
                         its copy pruned to CHEAP_SPARSITY as the cheap one (gradual magnitude
                         pruning of the cheap matrices only), the average-compute regulariser
                         at AVERAGE_BUDGET of the full encoder's FLOPs per second
  amnet_sparse_lamr      the same with the latency penalty L_amr instead
  amnet_factorized       AmNet whose cheap branch is the SVD factors of the trained LSTM at
                         CHEAP_MACS_RATIO of its MACs; average-compute regulariser
  amnet_factorized_lamr  the same with L_amr instead
  amnet_factorized_avg   the average-compute regulariser with its budget at the mean FLOPs per
                         second `amnet_factorized_lamr` reached (LAMR_MATCHED_BUDGET): the same
                         average compute, so what L_amr adds is where the compute goes

The processor (`hardware/profiles.py`, `cpu36sparse`): 36 MFLOP/s, zero weights skipped. The
paper's single encoders all ran slower than real time on its 650 MFLOP/s thread; this
project's small LSTM would not, so the processor is slowed instead: the full LSTM runs at
1.85x real time there, the single compressed encoders (70% of its MACs, as the paper's 30
MFLOPs against 43) at about 1.35x, and an encoder must spend under about half the full one's
compute to keep up. Evaluation simulates every utterance's latency on it
(`train.latency_profile`); the arbitrator's backlog and L_amr assume its speed (DEVICE).
"""

import dataclasses

import ml_collections

from experiments.configs import rnnt
from experiments.configs.recipe import anneal_arbitrators, at, size_and_variant

SIZES = ("tiny", "quick", "small")
VARIANTS = ("full", "sparse", "factorized", "amnet_sparse", "amnet_sparse_lamr",
            "amnet_factorized", "amnet_factorized_lamr", "amnet_factorized_avg")
BASE_RUN = "workdirs/compression_base"   # compression.py:pretrain's run
# The processor the latency is simulated on, and what the arbitrator and L_amr assume of it.
PROFILE = "cpu36sparse"
DEVICE = dict(flops_per_second=36e6, zero_skipping=True)
SINGLE_SPARSITY = 0.3        # single sparse encoder: 70% of the MACs left
SINGLE_MACS_RATIO = 0.7      # single factorized encoder: 70% of the MACs
CHEAP_SPARSITY = 0.8         # AmNet's pruned cheap branch: 20% of the MACs left
CHEAP_MACS_RATIO = 0.25      # AmNet's factorized cheap branch: 25% of the MACs
AVERAGE_BUDGET = 0.5         # the average-compute regulariser's budget, a share of the full's
# amnet_factorized_avg's budget, a share of the full encoder's FLOPs per second:
# amnet_factorized_lamr's mean on seed 0, 1.365 MFLOPs a frame against the full 3.604
# (BENCHMARKS.md, issue 37).
LAMR_MATCHED_BUDGET = 0.379
LAMR_WEIGHT = 1.0            # L_amr's weight (its value in seconds)
COMPUTE_WEIGHT = 1.0         # the average-compute regulariser's weight
# Cheap branches that copy the full one: every AmNet parameter but the arbitrator's starts
# from the trained LSTM, `cheap_input` and `cheap_recurrent` from `input` and `recurrent`.
ARBITRATOR = r"^(?!params/encoder/arbitrator/)"
CHEAP_FROM_FULL = ((r"/cheap_(input|recurrent)/", r"/\1/"),)


def get_config(arg: str = "amnet_factorized_lamr") -> ml_collections.ConfigDict:
  size, variant = size_and_variant("amnet.py", arg, SIZES, VARIANTS, "amnet_factorized_lamr")
  c = rnnt.get_config("small" if size in ("", "quick") else size)
  c.method = variant
  c.family = f"lstm-rnnt-{variant}"
  c.train.latency_profile = PROFILE
  steps = c.train.get_ref("num_steps")
  if size == "quick":
    c.variant = "quick"
  if c.variant == "small":
    c.data.dataset = "synth_speech/full"
    c.init_from = BASE_RUN
    c.optim.peak_lr = 1e-3
    c.train.eval_max_batches = 0   # all 2,000 dev utterances
  if variant == "sparse":
    c.transforms.prune = _prune(steps, SINGLE_SPARSITY, r"^encoder/.*kernel$")
  elif variant == "factorized":
    c.surgery.factorize = ml_collections.ConfigDict(dict(
        factory="compression.factorization:factorize", order=0, macs_ratio=SINGLE_MACS_RATIO,
        include="^encoder/", svd_from=c.init_from))
    c.init_from = ""   # the surgery loads the trained model whole (its SVD needs it)
  elif variant.startswith("amnet"):
    _amnet(c, variant, steps, size)
  return c


def _prune(steps, target: float, include: str) -> ml_collections.ConfigDict:
  """Gradual magnitude pruning as `compression.py:sparse*` does it, of the matching matrices."""
  return ml_collections.ConfigDict(dict(
      factory="compression.sparsity:gradual_magnitude_pruning", order=0, target=target,
      begin_step=0, end_step=at(steps, 40), every=(steps * 2) // 100 + 1, power=3.0,
      scope="lamp", block=(1, 1), include=include))


def _amnet(c: ml_collections.ConfigDict, variant: str, steps, size: str) -> None:
  lstm = c.model.lstm.to_dict()
  del c.model["lstm"]
  c.model.encoder = "amnet"
  c.model.amnet = ml_collections.ConfigDict(dict(
      lstm, arbitrator_hidden=32, temperature=1.0,
      backlog_flops_per_second=DEVICE["flops_per_second"],
      backlog_zero_skipping=DEVICE["zero_skipping"], route="learned"))
  c.imports = list(c.get("imports", ())) + ["asr.losses.cost"]
  # Soft splits first, hard ones (99.99/0.01) from 60% of the run on; the noise fades out over
  # 40-80%, so the last steps route as evaluation's argmax does (asr/models/amnet.py).
  anneal_arbitrators(c, steps)
  if "sparse" in variant:
    c.transforms.prune = _prune(steps, CHEAP_SPARSITY, r"/cheap_(input|recurrent)/kernel$")
    if c.init_from:
      c.init_from_keys, c.init_from_rename = ARBITRATOR, CHEAP_FROM_FULL
  else:
    c.surgery.factorize = ml_collections.ConfigDict(dict(
        factory="compression.factorization:factorize", order=0, macs_ratio=CHEAP_MACS_RATIO,
        include="/cheap_(input|recurrent)$", svd_from=c.init_from, svd_from_keys=ARBITRATOR,
        svd_from_rename=CHEAP_FROM_FULL))
    c.init_from = ""   # the surgery loads the trained model (the cheap branch: its factors)
  if variant.endswith("_lamr"):
    term = "latency"
    c.loss.latency = ml_collections.ConfigDict(dict(weight=LAMR_WEIGHT, **DEVICE))
  else:
    term, share = "compute", LAMR_MATCHED_BUDGET if variant.endswith("_avg") else AVERAGE_BUDGET
    c.loss.compute = ml_collections.ConfigDict(dict(
        weight=COMPUTE_WEIGHT, budget_flops_per_second=share * lstm_flops_per_second(c),
        zero_skipping=DEVICE["zero_skipping"]))
  if size == "quick":
    # From scratch neither branch knows anything yet: the penalty waits while both learn,
    # then ramps in over the second quarter of the run.
    c.schedules[f"{term}_weight"] = ml_collections.ConfigDict(dict(
        kind="linear", start=0.0, end=1.0, begin_step=at(steps, 25), end_step=at(steps, 50)))


def lstm_flops_per_second(c: ml_collections.ConfigDict) -> float:
  """FLOPs per second of audio of the config's LSTM stack (the full branch), as the encoder
  counts them (`LSTMEncoder.flops_per_frame`, of a shape-only model): 3.6 MFLOPs a 60 ms
  frame, 60.1 MFLOP/s, for `small`."""
  from flax import nnx
  from asr.models.lstm_encoder import LSTMEncoder, LSTMEncoderConfig
  fields = {f.name for f in dataclasses.fields(LSTMEncoderConfig)}
  options = {k: v for k, v in c.model[c.model.encoder].to_dict().items() if k in fields}
  enc = nnx.eval_shape(lambda: LSTMEncoder(c.model.num_mels, LSTMEncoderConfig(**options),
                                           rngs=nnx.Rngs(0)))
  return enc.flops_per_frame() / enc.frame_seconds
