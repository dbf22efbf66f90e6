"""`make demo`: the main job on the embedded corpus, end to end on a CPU.

1. builds the `small` synthetic corpus if it is missing (about 1.5 minutes on 2 cores);
2. trains the `small` RNN-T (experiments/configs/rnnt.py:small) in `workdirs/demo`, resuming
   if a previous demo was interrupted;
3. evaluates on the held-out-speaker test split with greedy and beam search, on the
   held-out accent, and on sentences written by hand outside the corpus's generator;
4. evaluates the test split again as the int8 edge processor would run the model
   (`asr-eval --backend int8`: post-training calibration on training batches, integer layers,
   latency on the NPU profile);
5. prints the WERs and where the checkpoints, metrics and the wandb run are.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from experiments import huge_pages  # noqa: E402


# What each evaluated split holds (asr.data.synth_corpus).
_SPLIT_NAMES = {"test": "held-out speakers", "test_accent": "a held-out accent",
                "test_handwritten": "hand-written sentences, new voices"}


def main(argv=None) -> int:
  if argv is None:            # the command line, not a caller in this process
    huge_pages.ensure()
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data-dir", default=None,
                      help="where the corpus is built and read (default: the run config's, "
                           "./data under `make demo`)")
  parser.add_argument("--workdir", default="workdirs/demo",
                      help="the run's directory; a stopped demo resumes from it")
  parser.add_argument("--variant", default="small", choices=["tiny", "small"],
                      help="rnnt.py's variant: small (the demo, about 10 minutes on 2 cores) or "
                           "tiny (a minute)")
  args = parser.parse_args(argv)

  from absl import logging
  logging.set_verbosity(logging.WARNING)
  from experiments import evaluate as eval_cli
  from experiments.evaluate import latency_for
  from experiments.configs.rnnt import get_config
  from asr.data import cli
  from asr.training.loop import open_dataset, train

  start = time.time()
  config = get_config(args.variant)
  if args.data_dir:
    config.data.data_dir = args.data_dir
  source = open_dataset(config)  # builds the corpus the first time
  print(f"\n{config.data.dataset} ({source.builder.data_dir}):")
  cli.print_stats(source)

  print(f"\ntraining {args.variant} RNN-T in {args.workdir} ...", flush=True)
  summary = train(config, args.workdir, latency=latency_for(config.train.latency_profile))
  print(f"dev WER after training: {summary.get('wer', float('nan')):.4f}")

  results = {}
  for split, decoder in (("test", "greedy"), ("test", "beam"), ("test_accent", "greedy"),
                         ("test_handwritten", "greedy")):
    print(f"\n== {split}, {decoder} ==", flush=True)
    eval_argv = ["--workdir", args.workdir, "--split", split, "--decoder", decoder]
    if args.data_dir:
      eval_argv += ["--data-dir", args.data_dir]
    eval_cli.main(eval_argv)
    results[(split, decoder)] = json.loads(
        open(os.path.join(args.workdir, "eval", f"{split}_{decoder}.json")).read())

  print("\n== test, greedy, on the int8 path ==", flush=True)
  eval_cli.main(["--workdir", args.workdir, "--split", "test", "--backend", "int8"]
                + (["--data-dir", args.data_dir] if args.data_dir else []))
  int8 = json.loads(open(os.path.join(args.workdir, "eval", "test_greedy_int8.json")).read())

  print("\n" + "=" * 72)
  print(f"demo finished in {(time.time() - start) / 60:.1f} min")
  for (split, decoder), r in results.items():
    print(f"  {split:<12} {decoder:<6}  WER {r['wer']:.2%}  CER {r['cer']:.2%}  "
          f"({r['num_utterances']} utterances, {_SPLIT_NAMES.get(split, split)})")
  r = results[("test", "greedy")]
  print(f"  {'test':<12} {'greedy':<6}  WER {int8['wer']:.2%}  CER {int8['cer']:.2%}  on the int8 "
        f"path (post-training calibration): {int8['model_bytes'] / 1e6:.2f} MB against "
        f"{r['model_bytes_float32'] / 1e6:.2f} MB float32; latency p90 "
        f"{int8['latency_ms_p90']:.2f} ms on the NPU profile, {r['latency_ms_p90']:.2f} ms float "
        "on a 650 MFLOP/s CPU")
  from asr.training.loop import build_model
  frame_ms = build_model(config).encoder.frame_seconds * 1000
  print(f"compute: {r['flops_per_second'] / 1e6:.1f} MFLOP per second of audio (encoder "
        f"{r['flops_per_frame'] / 1e6:.2f} MFLOP per {frame_ms:.0f} ms frame)")
  print(f"checkpoints: {os.path.abspath(os.path.join(args.workdir, 'checkpoints'))}")
  print(f"metrics:     {os.path.abspath(os.path.join(args.workdir, 'metrics.jsonl'))}")
  print(f"wandb run:   {os.path.abspath(os.path.join(args.workdir, 'wandb'))} "
        "(offline; `wandb sync` it to view online)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
