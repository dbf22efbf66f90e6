"""The training loop: data, model, jitted data-parallel step, checkpoints with resume, evaluation,
metrics as JSON lines and wandb.

`train(config, workdir)` is what `asr-train` runs and what notebooks and tests call. A run
started again with the same workdir resumes from its newest checkpoint (train state, data
position, the metrics window being averaged) and ends where an uninterrupted run would, with
the same parameters bit for bit; a changed config is refused, naming the keys.
"""

from __future__ import annotations

import collections
import contextvars
import dataclasses
import importlib
import itertools
import json
import os
import pathlib
import re
import shutil
import tempfile
import time

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from asr import features as F
from asr.data.pipeline import Batches, PipelineConfig
from asr.models import ENCODERS, Transducer, TransducerConfig, encoder_config
from asr.models.dense import set_matmul_dtype
from asr.tokenizer import CharTokenizer, SentencePieceTokenizer
from asr.training import objective, schedules as S, train_step as ts, transforms as T
from asr.training.checkpoint import Checkpointer, tree_paths
from asr.training.evaluate import evaluate
from asr.training.logger import MetricsLogger, cut_back
from asr.training.metrics import latency_summary

# Keys a resumed run may change (where the data lives, where logs go): nothing that changes
# what is computed.
# Keys that change nothing a run computes: a run resumes with other values (or without them).
RESUMABLE_KEYS = ("data.data_dir", "data.build_if_missing", "wandb.mode", "train.latency_profile")
# Steps the host may dispatch ahead of the device: enough to prepare the next batch while a
# step runs; few, so queued batches stay few and the progress bar tells the truth.
LOOKAHEAD = 2


# ---- construction from a config ----

def import_plugins(config) -> None:
  """Imports `config.imports`: modules that register encoder families or loss terms."""
  for name in config.get("imports", ()):
    importlib.import_module(name)


def loss_weights(config) -> dict[str, float]:
  """`{term: weight}` of the config's active loss terms, checked (`objective.term_specs`)."""
  specs = objective.term_specs(config.loss.to_dict(), dict(config.schedules))
  return {n: s.weight for n, s in objective.active_terms(specs, dict(config.schedules)).items()}


def loss_terms(config, tokenizer=None) -> dict[str, objective.BuiltTerm]:
  """The config's active loss terms, built with their options (a teacher is loaded here) and
  attached to the run's `tokenizer` (by default the character tokenizer, where the config
  uses characters; a word-piece run passes its own)."""
  if tokenizer is None and config.data.get("tokenizer", "chars") == "chars":
    tokenizer = CharTokenizer()
  return objective.build_terms(config.loss.to_dict(), dict(config.schedules), tokenizer)


def schedule_specs(config) -> dict:
  specs = {k: v.to_dict() if hasattr(v, "to_dict") else dict(v)
           for k, v in config.schedules.items()}
  if "learning_rate" in specs:
    raise ValueError("schedules.learning_rate is set by config.optim (peak_lr, warmup_steps, "
                     "end_lr_ratio)")
  specs["learning_rate"] = S.learning_rate_spec(config.optim, config.train.num_steps)
  return specs


def model_config(config) -> TransducerConfig:
  """`config.model`: `encoder` names a family and `model.<family>` holds its options."""
  options = config.model.to_dict()
  family = options.pop("encoder")
  blocks = {k: options.pop(k) for k in list(options) if isinstance(options[k], dict)}
  unknown = sorted(set(blocks) - set(ENCODERS))
  if unknown:
    raise ValueError(f"model.{unknown[0]} is not an encoder family's block; registered "
                     f"families: {', '.join(sorted(ENCODERS))}")
  enc = encoder_config(family, blocks.get(family, {}))
  fields = {f.name for f in dataclasses.fields(TransducerConfig)}
  bad = sorted(set(options) - fields)
  if bad:
    raise ValueError(f"model has no option(s) {', '.join(bad)}")
  return TransducerConfig(encoder=family, encoder_config=enc,
                          ctc_head="ctc" in loss_weights(config), **options)


_RESTORING: contextvars.ContextVar[dict | None] = contextvars.ContextVar("restoring", default=None)


def restoring_shapes() -> dict | None:
  """While `build_model` builds a model its checkpoint will fill: `{path: shape}` of that
  checkpoint's arrays (`params/encoder/layers/0/input/kernel/value`, ...); otherwise None. A
  surgery sizes what it builds from these instead of computing it from weights it would start
  from (which the checkpoint replaces, and which may no longer be on disk)."""
  return _RESTORING.get()


def build_model(config, restoring: dict | None = None) -> Transducer:
  """The config's transducer, after `config.surgery`: blocks shaped like `config.transforms`
  (`{name: {factory: "module:callable", order, **options}}`) whose factories return a function
  that changes the built model's structure in place (e.g. replaces dense layers by factorized
  ones: `compression.factorization`). Every place that builds the model (training, evaluation,
  a teacher) builds it through here, so checkpoints and models always agree. `restoring`:
  `{path: shape}` of the checkpoint the model is built for (`restoring_shapes`)."""
  cfg = model_config(config)
  model = Transducer(cfg, rngs=nnx.Rngs(config.seed))
  token = _RESTORING.set(restoring)
  try:
    for _, operate in T.build_transforms(dict(config.get("surgery", {})), "surgery"):
      operate(model)
  finally:
    _RESTORING.reset(token)
  set_matmul_dtype(model, cfg.matmul_dtype)  # layers the surgery put in multiply alike
  return model


TOKENIZER_FILE = "tokenizer.model"


def run_tokenizer(config, workdir: os.PathLike, source=None):
  """The run's tokenizer: characters, or the word-piece model stored in the workdir. With a
  `source` and no stored model (a run's start), trains one on the text of the first
  `data.tokenizer_texts` training utterances and stores it (the lead process writes it)."""
  kind = config.data.get("tokenizer", "chars")
  if kind == "chars":
    tokenizer = CharTokenizer()
  elif kind == "wordpiece":
    path = pathlib.Path(workdir) / TOKENIZER_FILE
    if not path.exists():
      if source is None:
        raise FileNotFoundError(f"{path} is missing: the run's word-piece model is stored there "
                                "when training starts")
      tokenizer = train_wordpieces(config, source, pathlib.Path(workdir))
    else:
      tokenizer = SentencePieceTokenizer(path)
  else:
    raise ValueError(f"data.tokenizer must be 'chars' or 'wordpiece', got {kind!r}")
  if tokenizer.vocab_size != config.model.vocab:
    raise ValueError(f"model.vocab={config.model.vocab} but the {kind} tokenizer has "
                     f"{tokenizer.vocab_size} ids (blank included): set model.vocab to it")
  return tokenizer


def train_wordpieces(config, source, workdir: pathlib.Path):
  """A SentencePiece model of `model.vocab` ids (0 = blank) trained on training text."""
  texts = [ex["text"] for ex in itertools.islice(source.examples(config.data.train_split),
                                                 config.data.tokenizer_texts)]
  with tempfile.TemporaryDirectory() as tmp:
    tokenizer = SentencePieceTokenizer.train(texts, pathlib.Path(tmp) / "spm",
                                             vocab_size=config.model.vocab)
    if jax.process_index() == 0:
      workdir.mkdir(parents=True, exist_ok=True)
      shutil.copyfile(tokenizer.model_path, workdir / TOKENIZER_FILE)
  return tokenizer  # loaded in memory: the temporary file may go


def pipeline_config(config, train: bool) -> PipelineConfig:
  d = config.data
  return PipelineConfig(
      batch_size=d.batch_size if train else d.eval_batch_size,
      bucket_seconds=tuple(d.bucket_seconds), max_chars_per_second=d.max_chars_per_second,
      shuffle_buffer=d.shuffle_buffer, on_bad_example=d.on_bad_example,
      sample_rate=model_config(config).features.sample_rate)


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


def build_step(config, graphdef, transforms=(), terms: dict | None = None):
  """(the un-jitted train step, its optimizer, its schedules) for a config's model; `terms`:
  its loss terms (`loss_terms`, built here if not given; the train state carries their
  arrays: `init_train_state(..., terms=terms)`)."""
  c = config
  schedules = S.make_schedules(schedule_specs(c))
  tx = ts.make_optimizer(c.optim.weight_decay, c.optim.clip_norm)
  terms = loss_terms(c) if terms is None else terms
  step_cfg = ts.StepConfig(terms=tuple(terms.items()), augment=augment_config(c),
                           features=model_config(c).features,
                           nonfinite_limit=c.train.max_nonfinite_in_a_row)
  return ts.make_train_step(graphdef, tx, step_cfg, schedules, transforms), tx, schedules


def param_bytes(params) -> int:
  return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(params)))


def weight_sparsity(params) -> float:
  """Share of exact zeros in the weight matrices (leaves of rank >= 2: kernels, embeddings);
  biases and normalization scales are not weights that pruning removes."""
  matrices = [np.asarray(x) for x in jax.tree.leaves(params) if np.ndim(x) >= 2]
  return float(sum((x == 0).sum() for x in matrices) / max(sum(x.size for x in matrices), 1))


def estimate_feature_stats(source, config, tokenizer) -> tuple[np.ndarray, np.ndarray]:
  """Mean and std `[F]` of the log-mels of the first `config.data.stats_utterances` training
  utterances in file order (the same on every host and every restart)."""
  cfg = dataclasses.replace(pipeline_config(config, False), on_bad_example="skip")
  batches = Batches.from_source(source, config.data.train_split, tokenizer, cfg, shuffle=False,
                                num_epochs=1, features=model_config(config).features)
  needed = config.data.stats_utterances

  def take():
    seen = 0
    for batch in batches:
      yield batch["features"], batch["feature_lengths"]
      seen += int((batch["feature_lengths"] > 0).sum())
      if seen >= needed:
        return
  try:
    return F.global_stats(take())
  finally:
    batches.close()


def renamed(path: str, rename) -> str:
  """`path` with each `(pattern, replacement)` of `rename` applied in turn (`re.sub`)."""
  for pattern, replacement in rename:
    path = re.sub(pattern, replacement, path)
  return path


def take_stored(tree, stored: dict, include: str = "", rename=(), *,
                where: str = "init_from") -> tuple[object, int]:
  """`tree` with each leaf under `params/` or `model_state/` whose path matches the regex
  `include` ("" = all) replaced by `stored[renamed(path, rename)]` (`stored`: `{path: array}`
  of a checkpoint, paths as `tree_paths` writes them). With `rename`, a leaf loads from another
  path: a branch of a new model from the layer of a trained one it copies, e.g.
  `((r"/cheap_(input|recurrent)/", r"/\1/"),)` starts `encoder/layers/0/cheap_input/kernel`
  from `encoder/layers/0/input/kernel`. Returns (tree, leaves loaded); a matched leaf whose
  source is missing or of another shape fails, naming both paths (`where` names the option)."""
  pattern = re.compile(include or ".*")
  flat, treedef = jax.tree.flatten(tree)
  problems, loaded = [], 0
  for i, (p, leaf) in enumerate(tree_paths(tree)):
    if not p.startswith(("params/", "model_state/")) or not pattern.search(p):
      continue
    source = renamed(p, rename)
    named = p if source == p else f"{p} (from {source})"
    if source not in stored:
      problems.append(f"{named} is not in the checkpoint")
    elif np.shape(stored[source]) != np.shape(leaf):
      problems.append(f"{named}: checkpoint {np.shape(stored[source])}, this model "
                      f"{np.shape(leaf)}")
    else:
      flat[i] = np.asarray(stored[source], np.asarray(leaf).dtype)
      loaded += 1
  if problems or not loaded:
    raise ValueError(f"{where} (keys {include!r}, rename {list(map(tuple, rename))}): "
                     + ("; ".join(problems[:8]) + (f"; and {len(problems) - 8} more"
                                                   if len(problems) > 8 else "")
                        if problems else "no parameter matched"))
  return jax.tree.unflatten(treedef, flat), loaded


def load_initial_weights(state: dict, source: str, include: str,
                         rename=()) -> tuple[dict, int]:
  """`state` with the leaves of `params` and `model_state` whose path matches the regex
  `include` ("" = all) replaced by a checkpoint's, each from its path after `rename`
  (`take_stored`): `source` is a run workdir (its newest checkpoint), a checkpoints folder, or
  one step's folder in it. Returns (state, leaves loaded); a matched leaf that the checkpoint
  lacks, or holds in another shape, fails."""
  path = pathlib.Path(source)
  step = None
  if (path / "checkpoints").is_dir():
    path = path / "checkpoints"
  elif path.name.isdigit() and path.parent.is_dir():
    path, step = path.parent, int(path.name)
  if not path.is_dir():
    raise FileNotFoundError(f"init_from={source!r}: no such run, checkpoints folder or step")
  ckpt = Checkpointer(path)
  try:
    stored, _, step = ckpt.read(step)
  finally:
    ckpt.close()
  return take_stored(state, stored, include, rename,
                     where=f"init_from={source!r} (step {step})")


def _flat_config(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat_config(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def check_resumed_config(path: pathlib.Path, config) -> None:
  """A resumed run must have the config it started with (but `RESUMABLE_KEYS`)."""
  old = _flat_config(json.loads(path.read_text()))
  new = _flat_config(json.loads(config.to_json_best_effort()))
  changed = sorted(k for k in set(old) | set(new)
                   if k not in RESUMABLE_KEYS and old.get(k, "<absent>") != new.get(k, "<absent>"))
  if changed:
    shown = "; ".join(f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
                      for k in changed[:8])
    raise ValueError(f"{path.parent} holds a run with another config ({shown}"
                     f"{'; ...' if len(changed) > 8 else ''}); resume it with its own config "
                     "or train in a new workdir")


def to_host(tree):
  """NumPy copies of a tree's arrays; of a replicated array in a multi-process run, the local
  copy (`jax.device_get` refuses arrays that span other processes' devices)."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array)
                      else np.asarray(x), tree)


# ---- the loop ----

def mesh_devices(platform: str = "") -> list:
  """The devices a run's mesh spans: every device of `platform` ("cpu", "gpu", "tpu"; "" for
  JAX's default backend, the accelerator where there is one). A platform JAX cannot see fails
  here, at the start of a run, naming the devices it does see."""
  if not platform:
    return jax.devices()
  try:
    return jax.devices(platform)
  except RuntimeError:
    seen = collections.Counter(d.platform for d in jax.devices())
    raise ValueError(
        f"train.platform={platform!r}: JAX sees no {platform} device, only "
        f"{', '.join(f'{n} {p}' for p, n in seen.items())} (jax {jax.__version__}). For NVIDIA "
        "GPUs install the `cuda` extra (README, 'On a GPU'); \"\" runs on what JAX sees"
    ) from None


class Trainer:
  """Holds what a run needs; `run()` trains to `config.train.num_steps`.

  `latency(graphdef, variables)`, if given, returns the latency callback of
  `asr.training.evaluate.evaluate` for the model being evaluated (a device simulator:
  `experiments.evaluate.latency_for`), so every evaluation reports `latency_ms_*`."""

  def __init__(self, config, workdir: os.PathLike, latency=None):
    # -- Run directory: resume or start afresh --
    import_plugins(config)
    self.config, c = config, config
    devices = mesh_devices(c.train.platform)
    self.latency = latency
    self.workdir = pathlib.Path(workdir)
    self.workdir.mkdir(parents=True, exist_ok=True)
    self.lead = jax.process_index() == 0  # the process that writes logs and reports
    self.checkpointer = Checkpointer(self.workdir / "checkpoints", c.train.keep_checkpoints)
    resume_step = self.checkpointer.latest_step()
    config_path = self.workdir / "config.json"
    if resume_step is not None and config_path.exists():
      check_resumed_config(config_path, config)
    if self.lead:
      cut_back(self.workdir, resume_step or 0)
      config_path.write_text(config.to_json_best_effort(indent=2))

    # -- Data --
    self.source = open_dataset(config)
    self.tokenizer = run_tokenizer(config, self.workdir, self.source)
    self.hosts = (jax.process_index(), jax.process_count())
    self.train_batches = Batches.from_source(
        self.source, c.data.train_split, self.tokenizer, pipeline_config(config, True),
        seed=c.seed, features=None, hosts=self.hosts,
        fresh_workers=c.data.fresh_audio_workers)

    # -- Devices: one mesh, the batch sharded on `data` --
    self.mesh = Mesh(np.array(devices), ("data",))
    if c.data.batch_size * jax.process_count() % self.mesh.size:
      raise ValueError(f"data.batch_size={c.data.batch_size} per host must divide evenly over "
                       f"{self.mesh.size} devices")
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P("data"))

    # -- Model, objective, optimizer, transforms --
    model = build_model(config, None if resume_step is None else
                        {p: shape for p, (shape, _) in self.checkpointer.stored().items()})
    if resume_step is None and c.model.normalization != "utterance":
      model.frontend.set_statistics(*estimate_feature_stats(self.source, config, self.tokenizer))
    self.graphdef = nnx.graphdef(model)
    self.transforms = T.build_transforms(dict(c.transforms))
    terms = loss_terms(config, self.tokenizer)
    step_fn, tx, self.schedules = build_step(config, self.graphdef, self.transforms, terms)
    state = ts.init_train_state(model, tx, c.seed, self.transforms, terms)
    if resume_step is None and c.init_from:
      state, loaded = load_initial_weights(state, c.init_from, c.init_from_keys,
                                           c.get("init_from_rename", ()))
      print(f"init_from {c.init_from}: {loaded} arrays loaded")

    # -- The jitted step: one compilation per bucket shape, or it fails --
    self.guard = ts.CompileGuard(len(c.data.bucket_seconds))

    def guarded(state, batch):
      self.guard.traced()
      return step_fn(state, batch)
    self.train_step = jax.jit(guarded, in_shardings=(self.replicated, self.batch_sharding),
                              out_shardings=(self.replicated, self.replicated),
                              donate_argnums=0)

    # -- Restore: state, data position, the metrics window of the interrupted log period --
    self.start_step, self.window_restored, self.window_audio_s = 0, [], 0.0
    if resume_step is not None:
      restored, data_state, _ = self.checkpointer.restore(ts.checkpointed(state))
      state = {**restored, "terms": state["terms"]}
      self.train_batches.restore(data_state["pipeline"])
      self.window_restored = data_state.get("window", [])
      self.window_audio_s = data_state.get("window_audio_seconds", 0.0)
      self.start_step = resume_step
    self.state = jax.device_put(state, self.replicated)
    self.logger = MetricsLogger(self.workdir, config, enabled=self.lead)

  def _device_batch(self, batch: dict) -> dict:
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, batch[k])
            for k in ts.BATCH_KEYS}

  def inference_variables(self):
    """(params, model_state) as the model runs them (transforms applied), on the host."""
    state = to_host({k: v for k, v in ts.checkpointed(self.state).items() if k != "opt_state"})
    return to_host(ts.inference_variables(state, self.transforms, self.schedules))

  def evaluate(self, split: str | None = None, decoder: str = "greedy", beam: int = 4,
               max_batches: int | None = None):
    split = split or self.config.data.eval_split
    batches = Batches.from_source(self.source, split, self.tokenizer,
                                  pipeline_config(self.config, False), shuffle=False,
                                  num_epochs=1, features=None)
    variables = self.inference_variables()
    summary, rows = evaluate(self.graphdef, variables, batches, self.tokenizer,
                             decoder=decoder, beam=beam,
                             max_symbols=self.config.train.max_symbols,
                             max_batches=self.config.train.eval_max_batches
                             if max_batches is None else max_batches,
                             latency=self.latency(self.graphdef, variables)
                             if self.latency else None)
    summary["skipped"] = batches.problems.as_metrics()
    if self.latency:
      summary.update(latency_summary([r["latency_ms"] / 1000 for r in rows]))
    return summary, rows

  def save(self, step: int, window: list[dict], audio_s: float) -> None:
    self.checkpointer.save(step, ts.checkpointed(self.state),
                           {"pipeline": self.train_batches.state(), "window": window,
                            "window_audio_seconds": audio_s})

  def _evaluate_and_log(self, step: int, bar) -> None:
    if self.lead:  # one process decodes; the others wait at the next step's collective
      summary, rows = self.evaluate()
      beam = self.config.train.get("eval_beam", 0)
      if beam and step == self.config.train.num_steps:  # the final evaluation, beam too
        searched, _ = self.evaluate(decoder="beam", beam=beam)
        summary.update(wer_beam=searched["wer"], cer_beam=searched["cer"],
                       per_accent_beam=searched.get("per_accent", {}))
      self.logger.log_eval(step, summary, rows)
      bar.write(f"step {step}: {self.config.data.eval_split} WER {summary['wer']:.3f} "
                f"CER {summary['cer']:.3f}")

  def _eval_due(self, step: int) -> bool:
    c = self.config.train
    return step > 0 and (step % c.eval_every == 0 or step == c.num_steps)

  def run(self, stop_after: int | None = None) -> dict:
    """Trains to `num_steps`; `stop_after` ends this process's work early without a final save,
    as a kill would (tests use it)."""
    from tqdm.auto import tqdm
    c = self.config.train
    step = self.start_step
    bar = tqdm(total=c.num_steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
               disable=not self.lead)
    params, _ = self.inference_variables()
    self.logger.log_static({"model_bytes": param_bytes(params),
                            "num_params": int(sum(np.size(x) for x in jax.tree.leaves(params)))})
    if self._eval_due(step) and step not in self.logger.evaluated_steps:
      self._evaluate_and_log(step, bar)  # interrupted during this evaluation: do it now
    # Metrics stay on the device until a log step: fetching them every step would make the
    # host wait for each step before it prepares and dispatches the next.
    window, window_start, window_steps = [], time.perf_counter(), 0
    audio_s = self.window_audio_s
    recent_ids: dict[int, list] = {}
    done_here = 0
    while step < c.num_steps:
      if stop_after is not None and done_here >= stop_after:
        bar.close()
        return {"stopped_at": step}
      batch = next(self.train_batches)
      self.state, metrics = self.train_step(self.state, self._device_batch(batch))
      step += 1
      done_here += 1
      recent_ids[step] = batch["ids"]
      audio_s += batch["audio_lengths"].sum() / self.train_batches.cfg.sample_rate
      window.append(metrics)
      window_steps += 1
      if len(window) > LOOKAHEAD:  # the host stays at most LOOKAHEAD steps ahead
        jax.block_until_ready(window[-1 - LOOKAHEAD]["loss"])
      bar.update(1)
      if step % c.log_every == 0 or step == c.num_steps:
        host = self.window_restored + to_host(window)
        wall = time.perf_counter() - window_start
        guard = to_host(self.state["guard"])
        record = {k: float(np.mean([float(m[k]) for m in host])) for k in host[-1]}
        record.update(steps_per_second=window_steps / wall,
                      audio_seconds_per_second=audio_s / wall,
                      nonfinite_total=int(guard["total"]),
                      **self.train_batches.problems.as_metrics())
        self.logger.log(step, record, prefix="train/")
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        ts.check_guard(guard, c.max_nonfinite_in_a_row, recent_ids)
        window, self.window_restored, recent_ids = [], [], {}
        window_start, window_steps, audio_s = time.perf_counter(), 0, 0.0
      if step % c.checkpoint_every == 0 or step == c.num_steps:
        self.window_restored += to_host(window)
        window = []
        self.save(step, [{k: float(v) for k, v in m.items()} for m in self.window_restored],
                  float(audio_s))
      if self._eval_due(step):
        self._evaluate_and_log(step, bar)
        window_start = time.perf_counter()
    bar.close()
    final = self._final()
    self.logger.finish()
    return final

  def _final(self) -> dict:
    """The run's last evaluation with its size and sparsity, written to `final.json`."""
    c = self.config.train
    saved = self.workdir / "eval" / f"step_{c.num_steps}.json"
    final = self.logger.last_eval
    if final is None and saved.exists():  # resumed after the last evaluation
      final = dict(json.loads(saved.read_text()), step=c.num_steps)
    if final is None:
      return {}
    params, _ = self.inference_variables()
    self.logger.write_final(dict(final, split=self.config.data.eval_split,
                                 model_bytes=param_bytes(params),
                                 sparsity=weight_sparsity(params)))
    return final

  def close(self) -> None:
    self.train_batches.close()
    self.checkpointer.close()


def train(config, workdir: os.PathLike, stop_after: int | None = None, latency=None) -> dict:
  """Trains (or resumes) the run in `workdir`; returns the last evaluation summary. `latency`:
  as `Trainer`'s."""
  trainer = Trainer(config, workdir, latency)
  try:
    return trainer.run(stop_after=stop_after)
  finally:
    trainer.close()


def load_for_inference(workdir: os.PathLike, step: int | None = None):
  """(config, graphdef, variables, step) of a run's newest (or given) checkpoint, where
  `variables` = (params with the run's transforms applied, model_state): the model is
  `nnx.merge(graphdef, *variables)`."""
  import ml_collections
  workdir = pathlib.Path(workdir)
  config_path = workdir / "config.json"
  if not config_path.exists():
    raise FileNotFoundError(f"{workdir} holds no config.json: is it a training workdir?")
  config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  import_plugins(config)
  ckpt = Checkpointer(workdir / "checkpoints")
  try:
    model = build_model(config, {p: shape for p, (shape, _) in ckpt.stored(step).items()})
    graphdef = nnx.graphdef(model)
    transforms = T.build_transforms(dict(config.transforms))
    like = ts.init_train_state(model, ts.make_optimizer(config.optim.weight_decay,
                                                        config.optim.clip_norm),
                               config.seed, transforms)
    state, _, step = ckpt.restore(ts.checkpointed(like), step)
  finally:
    ckpt.close()
  schedules = S.make_schedules(schedule_specs(config))
  return config, graphdef, ts.inference_variables(state, transforms, schedules), step
