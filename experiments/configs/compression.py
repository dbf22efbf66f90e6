"""Compression during training, one method per variant, on the demo's LSTM transducer.

  asr-train --config experiments/configs/compression.py:pretrain --workdir workdirs/compression_base
  asr-sweep experiments/sweeps/compression.yaml --local                         # the table
  asr-train --config experiments/configs/compression.py:sparse50 --workdir W      # one row
  asr-train --config experiments/configs/compression.py:tiny,qat8 --workdir W     # tests, CI

Compression starts from a trained dense model and compresses it while training goes on, as
gradual pruning and QAT are used in practice (Zhu and Gupta, 2017, prune trained networks): a
method measured on a model that has not learned yet would measure nothing. `pretrain` trains
that model once (the `small` LSTM for 8,000 steps on the 100,000 unique utterances of
`synth_speech/full`: about an hour on 2 cores, 20.75% held-out-speaker test WER with beam 4 in
BENCHMARKS.md); every other `small` row continues it for 1,200 steps on the same corpus (peak
learning rate 1e-3), so `dense` (the same 1,200 steps without compression) is the reference.

`arg` is `[SIZE,]METHOD[+METHOD...]`: SIZE is `rnnt.py`'s variant (`small` by default; `tiny`
for tests, which trains from scratch on the tiny corpus); methods joined by `+` combine
(`sparse50+reg8`: pruned, then the pruned weights quantized; zeros stay on every grid). Each
METHOD is one of:

  pretrain           the dense model every `small` row starts from (see above)
  dense              1,200 more steps, no compression: the reference
  sparse50/70/80/90  gradual magnitude pruning to that share of zeros over all the weight
                     matrices, ranked together by layer-adaptive scores (`compression.sparsity`,
                     `scope="lamp"`: a weight's square over the sum of the squares of its
                     matrix's weights at least as large; cubic ramp from the first step to 40%
                     of the run, masks recomputed every 2% of it, then 60% of the run to
                     recover at full sparsity, while the learning rate is still high).
                     BENCHMARKS.md measured each choice at 50%: ranking raw magnitudes over
                     all matrices costs half what cutting every matrix alike did (+5.0%
                     relative against +9.1% at 1,200 steps); the early ramp +3.3% at 1,200
                     steps (+4.0% ending at 20%, +4.6% at 60%); LAMP's scores against raw
                     magnitudes, +4.0% against +6.0% on the mean of three seeds (dense 25.22%,
                     LAMP 26.22%, raw 26.73%; `experiments/sweeps/compression_seeds.yaml`),
                     better on every seed; at 80% and 2,400 steps, +31.9% against +38% (raw
                     magnitudes empty the first LSTM's input matrix to 93% zeros, LAMP 82%).
                     One seed's dense WER ranges over 0.7 points, so the single-seed figures
                     resolve differences of about a point, no finer
  bsparse50          the same at 50%, cutting blocks of 1 x 4 (4 adjacent output units of one
                     input row: what zero-skipping hardware skips at once, and what the
                     compressed format marks with one bit, `hardware.weight_format`)
  ptq8, ptq4         post-training quantization: weights rounded to the per-channel grid at the
                     last step (what evaluation sees); trained as `dense`
  qat8, qat4         straight-through fake quantization of the weights from 20% of the run
  reg8, reg4         regularised QAT: float forward pass, the grid penalty `quant_reg` warmed up
                     over the first half of the run, weights snapped onto the grid every 5% of
                     the run in its second half and at its last step (the final model is on
                     the grid). The penalty's weight is 0.1 at 8 bits and 1 at 4
                     (`REG_WEIGHT`): its gradient grows as the grid step shrinks (pi / step,
                     the step 18 times finer at 8 bits), and BENCHMARKS.md measured each
                     weight better at its width (8 bits: +0.9% relative to dense at 0.1, +3.8%
                     at 1; 4 bits: 0.9% better than PTQ at 1, 5.0% worse at 0.1; the weight-1
                     rows on an earlier pretrained model)
  act8               every dense layer's input fake-quantized to 8 bits with a moving-average
                     range (model surgery): combine with a weight method, `reg8+act8`, for a
                     model whose products are all 8-bit
  fact50, fact25     every encoder matrix factorized (`compression.factorization`) at the rank
                     whose two factors cost 50% (25%) of its multiply-accumulates, from the
                     truncated SVD of the pretrained model's matrices
  student            a quarter-size model (LSTM, prediction network and joint 128 wide; about
                     29% of the parameters) trained from scratch for 2,400 steps: alone, the
                     reference for distillation
  distill            the loss adds `distill` (KL of the joint's distributions, collapsed form,
                     weight 3) with the pretrained model as teacher, each lattice cell weighed
                     by the teacher's posterior that the alignment passes through it
                     (`compression.distillation`, `cells="alignment"`; every option in
                     `config.loss.distill`): BENCHMARKS.md measured it closing 16.1% of the
                     gap between the student alone and the teacher at weight 3 and 12.6% at
                     weight 1, where every cell alike (`.cells=lattice`, the paper's) closed
                     9.5% at weight 3 and 4.0% at 10 (one seed each). Weight 10 closed 17.5%,
                     within one seed's spread of weight 3; the whole vocabulary
                     (`.form=full`, 16.1%) and a temperature of 2 (`.temperature=2.0`, 15.4%)
                     did no better; the CTC heads' KL at every frame at a tenth of weight 10
                     (`--config.loss.distill.weight=10 --config.loss.distill.ctc=0.1`, off
                     here) closed 19.7%, within one seed's spread of weight 10 alone.
                     `--config.loss.distill.teacher` for another teacher

A distilled student, 50% sparse, with 8-bit weights and activations:
`compression.py:student+distill+sparse50+reg8+act8`.

Each method's steps are fractions of `train.num_steps`, tied to it: `--config.train.num_steps=N`
moves the ramps with it. Every weight matrix except the auxiliary CTC head is compressed
(`compression.weights`).
"""

import ml_collections

from experiments.configs import rnnt

SPARSE = {"sparse50": 0.5, "sparse70": 0.7, "sparse80": 0.8, "sparse90": 0.9}
BLOCK_SPARSE = {"bsparse50": 0.5}   # blocks of 1 x 4 (4 adjacent output units of an input row)
BITS = {"ptq8": 8, "ptq4": 4, "qat8": 8, "qat4": 4, "reg8": 8, "reg4": 4}
# The grid penalty's weight by width: see `reg8, reg4` above.
REG_WEIGHT = {8: 0.1, 4: 1.0}
ACTIVATIONS = {"act8": 8}
FACTORIZED = {"fact50": 0.5, "fact25": 0.25}
METHODS = ("pretrain", "dense", *SPARSE, *BLOCK_SPARSE, *BITS, *ACTIVATIONS, *FACTORIZED, "student", "distill")
BASE_RUN = "workdirs/compression_base"   # where `pretrain` is trained; `small` rows start there


def _at(steps, percent: int):
  """`percent` % of the run's steps, tied to `train.num_steps` (an int field reference)."""
  return (steps * percent) // 100


def _every(steps, percent: int):
  """A period of about `percent` % of the run, at least 1 step (a short test run)."""
  return (steps * percent) // 100 + 1


def get_config(arg: str = "dense") -> ml_collections.ConfigDict:
  size, _, methods = (arg or "dense").rpartition(",")
  c = rnnt.get_config(size or "small")
  if c.variant == "small":
    c.data.dataset = "synth_speech/full"
    c.init_from = BASE_RUN
    c.optim.peak_lr = 1e-3
    c.train.eval_max_batches = 0   # all 2,000 dev utterances: the table's WER (greedy)
  names = methods.split("+")
  for method in names:
    if method not in METHODS:
      raise ValueError(f"compression.py: unknown method {method!r} in {arg!r}; one of "
                       f"{', '.join(METHODS)} (after an optional size, joined by '+': "
                       "tiny,sparse50+reg8)")
  kinds = ["sparse" if m in BLOCK_SPARSE else m.rstrip("0123456789") for m in names]
  if len(set(kinds)) < len(kinds) or ({"dense", "pretrain"} & set(names) and len(names) > 1):
    raise ValueError(f"compression.py: {arg!r} combines methods of one kind, or dense or "
                     "pretrain with another: at most one sparse, one of ptq/qat/reg, one act, "
                     "one fact")
  if len({"ptq", "qat", "reg"} & set(kinds)) > 1:
    raise ValueError(f"compression.py: {arg!r} quantizes twice: choose one of ptq, qat, reg")
  c.method = methods
  c.family = f"lstm-rnnt-{methods}"
  for method in names:
    _add(c, method)
  return c


def _add(c: ml_collections.ConfigDict, method: str) -> None:
  steps = c.train.get_ref("num_steps")
  if method in SPARSE or method in BLOCK_SPARSE:
    c.transforms.prune = ml_collections.ConfigDict(dict(
        factory="compression.sparsity:gradual_magnitude_pruning", order=0,
        target={**SPARSE, **BLOCK_SPARSE}[method], begin_step=0,
        end_step=_at(steps, 40), every=_every(steps, 2), power=3.0, scope="lamp",
        block=(1, 4) if method in BLOCK_SPARSE else (1, 1)))
  elif method.startswith("ptq"):
    c.transforms.quant = ml_collections.ConfigDict(dict(
        factory="compression.quantization:fake_quantized_weights", order=1, bits=BITS[method],
        begin_step=steps))
  elif method.startswith("qat"):
    c.transforms.quant = ml_collections.ConfigDict(dict(
        factory="compression.quantization:fake_quantized_weights", order=1, bits=BITS[method],
        begin_step=_at(steps, 20)))
  elif method.startswith("reg"):
    c.imports = list(c.get("imports", ())) + ["compression.quantization"]
    c.transforms.quant = ml_collections.ConfigDict(dict(
        factory="compression.quantization:regularised_quantization", order=1, bits=BITS[method],
        every=_every(steps, 5), hard_begin_step=_at(steps, 50), last_step=steps))
    c.loss.quant_reg = REG_WEIGHT[BITS[method]]
    c.schedules.quant_reg_weight = ml_collections.ConfigDict(dict(
        kind="linear", start=0.0, end=1.0, begin_step=0, end_step=_at(steps, 50)))
  elif method in ACTIVATIONS:   # after factorization (order 0): its factors are quantized too
    c.surgery.act = ml_collections.ConfigDict(dict(
        factory="compression.quantization:quantize_activations", order=1,
        bits=ACTIVATIONS[method]))
    # The pretrained model has no activation ranges: load all but them (they start unset and
    # are measured in the first training steps).
    c.init_from_keys = r"^(?!.*/act_range/)"
  elif method in FACTORIZED:
    c.surgery.factorize = ml_collections.ConfigDict(dict(
        factory="compression.factorization:factorize", order=0, macs_ratio=FACTORIZED[method],
        include="^encoder/", svd_from=c.init_from))
    c.init_from = ""   # the surgery loads the pretrained model whole (its SVD needs it)
  elif method == "pretrain":
    c.init_from = ""
    c.optim.peak_lr = 3e-3
    c.train.num_steps = 8000
    c.train.eval_every = c.train.checkpoint_every = 1000
    c.train.eval_max_batches = 4
  elif method == "student":
    c.init_from = ""
    c.optim.peak_lr = 3e-3
    c.train.num_steps *= 2
    c.model.lstm.hidden //= 2
    c.model.pred_embed //= 2
    c.model.pred_hidden //= 2
    c.model.joint_dim //= 2
  elif method == "distill":
    c.imports = list(c.get("imports", ())) + ["compression.distillation"]
    # `ctc`: the CTC heads' per-frame KL beside the lattice's (`compression.distillation`).
    c.loss.distill = ml_collections.ConfigDict(dict(
        weight=3.0, teacher=BASE_RUN, form="collapsed", cells="alignment", temperature=1.0,
        ctc=0.0))
