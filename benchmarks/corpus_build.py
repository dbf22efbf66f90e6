"""Corpus build time: `synth_speech/<size>` from nothing into a fresh data dir.

  .venv/bin/python -m benchmarks.corpus_build [--size small] [--workers N]

Prints wall time, hours of audio made, the real-time factor, and the ratio of the wall time to
the 5-minute budget of the `small` corpus (issue 2) — the named reference.
"""

import argparse
import os
import tempfile
import time

BUDGET_S = {"tiny": 300.0, "small": 300.0, "full": 3000.0}


def main(argv=None):
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from asr.data import cli, synth_tfds
  from asr.data.sources import open_source
  p = argparse.ArgumentParser()
  p.add_argument("--size", default="small")
  p.add_argument("--workers", type=int, default=None)
  args = p.parse_args(argv)
  with tempfile.TemporaryDirectory() as data_dir:
    builder = synth_tfds.builder(args.size, data_dir=data_dir, workers=args.workers)
    start = time.perf_counter()
    builder.download_and_prepare()
    wall = time.perf_counter() - start
    stats = cli.print_stats(open_source(f"synth_speech/{args.size}", data_dir))
  hours = sum(s["hours"] for s in stats.values())
  print(f"cores: {os.cpu_count()}, workers: {args.workers or os.cpu_count()}")
  print(f"built synth_speech/{args.size}: {sum(s['utterances'] for s in stats.values())} "
        f"utterances, {hours:.2f} h of audio in {wall:.1f} s = {hours * 3600 / wall:.0f}x real time")
  print(f"ratio to the {BUDGET_S[args.size]:.0f} s budget: {wall / BUDGET_S[args.size]:.2f}")


if __name__ == "__main__":
  main()
