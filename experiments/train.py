"""`asr-train --config experiments/configs/rnnt.py:tiny --workdir W [--config.key=value ...]`

Trains (or resumes) the run in W. An unknown `--config.*` key fails at start and names it.
Started by a `wandb agent` (see `asr-sweep`), W defaults to `workdirs/sweeps/<sweep id>/<run id>`.

On several hosts, start the same command on each with `--coordinator_address=HOST:PORT
--num_processes=N --process_id=I` (`jax.distributed.initialize`; on CPU hosts the collectives
go through gloo). Each host reads the data and keeps its share of every global batch; the
first host writes the metrics and reports.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import huge_pages

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file, e.g. path.py:variant",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory: config, checkpoints, metrics")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "multi-host: HOST:PORT of process 0 (jax.distributed)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multi-host: number of processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "multi-host: this process's index")


def _workdir() -> str:
  if _WORKDIR.value:
    return _WORKDIR.value
  if os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"):
    return os.path.join("workdirs", "sweeps", os.environ["WANDB_SWEEP_ID"],
                        os.environ["WANDB_RUN_ID"])
  raise app.UsageError("--workdir is required (the run's directory)")


def _main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every file it touches at INFO
  if _COORDINATOR.value:
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts only
    jax.distributed.initialize(_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  from asr.training.loop import train
  from experiments.evaluate import latency_for
  workdir = _workdir()
  summary = train(_CONFIG.value, workdir,
                  latency=latency_for(_CONFIG.value.train.get("latency_profile", "cpu650")))
  if summary:
    print(f"final {_CONFIG.value.data.eval_split}: WER {summary['wer']:.4f}  CER "
          f"{summary['cer']:.4f}  ({summary['num_utterances']} utterances)")
  print(f"workdir: {os.path.abspath(workdir)} (checkpoints/, metrics.jsonl, eval/, wandb/)")


def main():
  huge_pages.ensure()
  flags.mark_flags_as_required(["config"])
  _help_from_this_module()
  app.run(_main)


def _help_from_this_module() -> None:
  """absl's `--help` prints `__main__`'s docstring and the flags of the module named
  `sys.argv[0]`: under the console script (`asr-train`) those are its wrapper's, so it printed
  only `USAGE: asr-train [flags]`. This module's usage text and flags stand in for them."""
  main_module = sys.modules["__main__"]
  if not main_module.__doc__:
    main_module.__doc__ = __doc__
  for flag in flags.FLAGS.get_key_flags_for_module(__name__):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


if __name__ == "__main__":
  sys.exit(main())
