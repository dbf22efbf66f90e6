"""What the recipes whose argument is `[SIZE,]VARIANT` share (`amnet.py`, `cat.py`, `mwer.py`):
reading the argument, a share of the run's steps, fine-tuning a trained run, and the
arbitrators' annealing schedules."""

import ml_collections


def size_and_variant(recipe: str, arg: str, sizes: tuple, variants: tuple,
                     default: str) -> tuple[str, str]:
  """`"tiny,gated_l2"` -> ("tiny", "gated_l2"); a size alone takes `default`; "" the size the
  recipe defaults to. Anything else fails, naming what `recipe` takes."""
  size, _, variant = (arg or "").rpartition(",")
  if not size and variant in sizes:
    size, variant = variant, default
  if variant not in variants or size not in ("",) + tuple(sizes):
    raise ValueError(f"{recipe}: unknown variant {variant!r} or size {size!r} in {arg!r}; "
                     f"variants {', '.join(variants)} after an optional size "
                     f"({', '.join(sizes)}): {sizes[0]},{variants[-1]}")
  return size, variant


def at(steps, percent: int):
  """`percent` % of the run's steps, tied to `train.num_steps` (an int field reference)."""
  return (steps * percent) // 100


def anneal_arbitrators(c: ml_collections.ConfigDict, steps) -> None:
  """The schedules an arbitrator's Gumbel noise reads (`asr.models.amnet`, `asr.models.gates`):
  the temperature from 1 to 0.1 over the first 60% of the run (soft splits, about 70/30 at
  logits one apart, to hard ones), the noise's scale from 1 to 0 over 40-80%, so the last steps
  decide as evaluation does."""
  c.schedules.arbitrator_temperature = ml_collections.ConfigDict(dict(
      kind="exponential", start=1.0, end=0.1, begin_step=0, end_step=at(steps, 60)))
  c.schedules.arbitrator_noise = ml_collections.ConfigDict(dict(
      kind="linear", start=1.0, end=0.0, begin_step=at(steps, 40), end_step=at(steps, 80)))


def fine_tune(c: ml_collections.ConfigDict, base_run: str, steps: int, peak_lr: float,
              warmup_steps: int, checkpoint_every: int) -> None:
  """`c` continues the trained run `base_run` for `steps` steps (a fresh warm-up to
  `peak_lr`), evaluated once at the end on the whole dev split."""
  c.init_from = base_run
  c.train.num_steps = steps
  c.optim.peak_lr = peak_lr
  c.optim.warmup_steps = warmup_steps
  c.train.eval_every = steps
  c.train.checkpoint_every = checkpoint_every
  c.train.eval_max_batches = 0   # the whole split
