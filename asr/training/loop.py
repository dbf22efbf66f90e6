"""The training loop: data, model, jitted data-parallel step, checkpoints with resume, evaluation,
metrics as JSON lines and wandb.

`train(config, workdir)` is what `asr-train` runs and what notebooks and tests call. A killed
run started again with the same workdir resumes from its newest checkpoint (train state and
data position) and ends where an uninterrupted run would.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from asr import features as F
from asr.data.pipeline import Batches, PipelineConfig
from asr.models import Transducer, TransducerConfig
from asr.tokenizer import CharTokenizer
from asr.training import train_step as ts
from asr.training.checkpoint import Checkpointer
from asr.training.evaluate import evaluate
from asr.training.logger import MetricsLogger


# ---- construction from a config ----

def model_config(config) -> TransducerConfig:
  return TransducerConfig(**config.model.to_dict())


def build_model(config) -> Transducer:
  return Transducer(model_config(config), rngs=nnx.Rngs(config.seed))


def pipeline_config(config, train: bool) -> PipelineConfig:
  d = config.data
  return PipelineConfig(
      batch_size=d.batch_size if train else d.eval_batch_size,
      bucket_seconds=tuple(d.bucket_seconds), max_chars_per_second=d.max_chars_per_second,
      shuffle_buffer=d.shuffle_buffer, on_bad_example=d.on_bad_example)


def open_dataset(config):
  """The configured dataset; the synthetic corpus is built first if it is missing."""
  from asr.data.sources import SYNTH, open_source
  data_dir = config.data.data_dir or None
  name = config.data.dataset
  if name.startswith(SYNTH) and config.data.build_if_missing:
    from asr.data import synth_tfds
    size, _, seed = (name.partition("/")[2] or "tiny").partition("_seed")
    synth_tfds.ensure_built(size, int(seed or 0), data_dir)
  return open_source(name, data_dir)


def augment_config(config) -> F.AugmentConfig | None:
  a = config.augment
  if not a.enabled:
    return None
  return F.AugmentConfig(freq_masks=a.freq_masks, freq_mask_width=a.freq_mask_width,
                         time_masks=a.time_masks, time_mask_ratio=a.time_mask_ratio,
                         speed=tuple(a.speed), warp=tuple(a.warp))


def param_bytes(params) -> int:
  return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(params)))


def param_sparsity(params) -> float:
  leaves = [np.asarray(x) for x in jax.tree.leaves(params)]
  return float(sum((x == 0).sum() for x in leaves) / max(sum(x.size for x in leaves), 1))


# ---- the loop ----

class Trainer:
  """Holds what a run needs; `run()` trains to `config.train.num_steps`."""

  def __init__(self, config, workdir: os.PathLike):
    self.config = config
    self.workdir = pathlib.Path(workdir)
    self.workdir.mkdir(parents=True, exist_ok=True)
    (self.workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    self.tokenizer = CharTokenizer()
    self.source = open_dataset(config)

    self.mesh = Mesh(np.array(jax.devices()), ("data",))
    n_dev = self.mesh.size
    if config.data.batch_size * jax.process_count() % n_dev:
      raise ValueError(f"data.batch_size={config.data.batch_size} per host must divide evenly over "
                       f"{n_dev} devices")
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P("data"))

    model = build_model(config)
    self.graphdef, _ = nnx.split(model)
    o = config.optim
    self.schedule = ts.learning_rate_schedule(o.peak_lr, o.warmup_steps, config.train.num_steps,
                                              o.end_lr_ratio)
    self.tx = ts.make_optimizer(self.schedule, o.weight_decay, o.clip_norm)
    self.state = jax.device_put(ts.init_train_state(model, self.tx, config.seed), self.replicated)
    self.checkpointer = Checkpointer(self.workdir / "checkpoints", config.train.keep_checkpoints)

    self.train_batches = Batches.from_source(
        self.source, config.data.train_split, self.tokenizer, pipeline_config(config, True),
        seed=config.seed, features=None)
    self.guard = ts.CompileGuard(len(config.data.bucket_seconds))
    step_cfg = ts.StepConfig(ctc_weight=config.model.ctc_weight, augment=augment_config(config))
    step_fn = ts.make_train_step(self.graphdef, self.tx, step_cfg, self.schedule)

    def guarded(state, batch):
      self.guard.traced()
      return step_fn(state, batch)
    self.train_step = jax.jit(guarded, in_shardings=(self.replicated, self.batch_sharding),
                              out_shardings=(self.replicated, self.replicated),
                              donate_argnums=0)
    self.nonfinite = ts.NonFiniteGuard(config.train.max_nonfinite_in_a_row)
    self.start_step = 0
    latest = self.checkpointer.latest_step()
    if latest is not None:
      state, data_state, _ = self.checkpointer.restore(self.state)
      self.state = jax.device_put(state, self.replicated)
      self.train_batches.restore(data_state["pipeline"])
      self.start_step = latest
    self.logger = MetricsLogger(self.workdir, config)

  def _device_batch(self, batch: dict) -> dict:
    local = {k: batch[k] for k in ts.BATCH_KEYS}
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
            for k, v in local.items()}

  def evaluate(self, split: str | None = None, decoder: str = "greedy", beam: int = 4,
               max_batches: int | None = None):
    split = split or self.config.data.eval_split
    batches = Batches.from_source(self.source, split, self.tokenizer,
                                  pipeline_config(self.config, False), shuffle=False,
                                  num_epochs=1, features=None)
    params = jax.device_get(self.state["params"])
    summary, rows = evaluate(self.graphdef, params, batches, self.tokenizer, decoder=decoder,
                             beam=beam, max_symbols=self.config.train.max_symbols,
                             max_batches=self.config.train.eval_max_batches
                             if max_batches is None else max_batches)
    summary["skipped"] = batches.problems.as_metrics()
    return summary, rows

  def save(self, step: int) -> None:
    self.checkpointer.save(step, self.state, {"pipeline": self.train_batches.state()})

  def run(self, stop_after: int | None = None) -> dict:
    """Trains to `num_steps`; `stop_after` ends this process's work early without a final save,
    as a kill would (tests use it)."""
    from tqdm.auto import tqdm
    c = self.config.train
    step = self.start_step
    bar = tqdm(total=c.num_steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    window, window_start, audio_s = [], time.perf_counter(), 0.0
    params = jax.device_get(self.state["params"])
    self.logger.log_static({"model_bytes": param_bytes(params),
                            "num_params": int(sum(np.size(x) for x in jax.tree.leaves(params)))})
    done_here = 0
    while step < c.num_steps:
      if stop_after is not None and done_here >= stop_after:
        bar.close()
        return {"stopped_at": step}
      batch = next(self.train_batches)
      self.state, metrics = self.train_step(self.state, self._device_batch(batch))
      metrics = jax.device_get(metrics)
      step += 1
      done_here += 1
      self.nonfinite.update(bool(metrics["nonfinite"]), step, batch["ids"])
      audio_s += batch["audio_lengths"].sum() / 16000
      window.append(metrics)
      bar.update(1)
      bar.set_postfix(loss=f"{float(metrics['loss']):.3f}")
      if step % c.log_every == 0 or step == c.num_steps:
        wall = time.perf_counter() - window_start
        record = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
        record.update(steps_per_second=len(window) / wall, audio_seconds_per_second=audio_s / wall,
                      nonfinite_total=self.nonfinite.total, **self.train_batches.problems.as_metrics())
        self.logger.log(step, record, prefix="train/")
        window, window_start, audio_s = [], time.perf_counter(), 0.0
      if step % c.checkpoint_every == 0 or step == c.num_steps:
        self.save(step)
      if step % c.eval_every == 0 or step == c.num_steps:
        summary, rows = self.evaluate()
        self.logger.log_eval(step, summary, rows)
        bar.write(f"step {step}: {self.config.data.eval_split} WER {summary['wer']:.3f} "
                  f"CER {summary['cer']:.3f}")
        window_start = time.perf_counter()
    bar.close()
    final = self.logger.last_eval
    saved = self.workdir / "eval" / f"step_{c.num_steps}.json"
    if final is None and saved.exists():  # resumed after the last evaluation: nothing left to do
      final = dict(json.loads(saved.read_text()), step=c.num_steps)
    if final is not None:
      params = jax.device_get(self.state["params"])
      self.logger.write_final(dict(final, split=self.config.data.eval_split,
                                   model_bytes=param_bytes(params),
                                   sparsity=param_sparsity(params)))
    self.logger.finish()
    return final or {}

  def close(self) -> None:
    self.train_batches.close()
    self.checkpointer.close()


def train(config, workdir: os.PathLike, stop_after: int | None = None) -> dict:
  """Trains (or resumes) the run in `workdir`; returns the last evaluation summary."""
  trainer = Trainer(config, workdir)
  try:
    return trainer.run(stop_after=stop_after)
  finally:
    trainer.close()


def load_for_inference(workdir: os.PathLike, step: int | None = None):
  """(config, graphdef, params, step) of a run's newest (or given) checkpoint."""
  import ml_collections
  workdir = pathlib.Path(workdir)
  config_path = workdir / "config.json"
  if not config_path.exists():
    raise FileNotFoundError(f"{workdir} holds no config.json: is it a training workdir?")
  config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  model = build_model(config)
  graphdef, params = nnx.split(model)
  ckpt = Checkpointer(workdir / "checkpoints")
  o = config.optim
  tx = ts.make_optimizer(ts.learning_rate_schedule(o.peak_lr, o.warmup_steps,
                                                   config.train.num_steps), o.weight_decay,
                         o.clip_norm)
  like = ts.init_train_state(model, tx, config.seed)
  state, _, step = ckpt.restore(like, step)
  ckpt.close()
  return config, graphdef, state["params"], step
