"""`asr-train --config experiments/configs/rnnt.py:tiny --workdir W [--config.key=value ...]`

Trains (or resumes) the run in W. An unknown `--config.*` key fails at start and names it.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file, e.g. path.py:variant",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory: config, checkpoints, metrics")


def _main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every file it touches at INFO
  from asr.training.loop import train
  summary = train(_CONFIG.value, _WORKDIR.value)
  if summary:
    print(f"final {_CONFIG.value.data.eval_split}: WER {summary['wer']:.4f}  CER "
          f"{summary['cer']:.4f}  ({summary['num_utterances']} utterances)")
  print(f"workdir: {os.path.abspath(_WORKDIR.value)} (checkpoints/, metrics.jsonl, eval/, wandb/)")


def main():
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(_main)


if __name__ == "__main__":
  sys.exit(main())
