"""`make demo`: the main job on the embedded corpus.

Today it builds the `small` synthetic corpus if it is missing, prints its statistics and a few
examples, and runs the input pipeline (bucketing, features) over the held-out-speaker dev split.
Training and evaluating the RNN-T join it when the model lands.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
  from asr.data import cli, synth_tfds
  from asr.data.pipeline import Batches, PipelineConfig
  from asr.data.sources import DEFAULT_DATA_DIR, open_source
  from asr.tokenizer import CharTokenizer

  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
  parser.add_argument("--size", default="small", choices=["tiny", "small", "full"])
  args = parser.parse_args(argv)

  builder = synth_tfds.builder(args.size, data_dir=args.data_dir)
  if not builder.is_prepared():
    print(f"building synth_speech/{args.size} in {args.data_dir} ...", flush=True)
    start = time.time()
    builder.download_and_prepare()
    print(f"built in {time.time() - start:.0f} s")
  source = open_source(f"synth_speech/{args.size}", args.data_dir)
  print(f"\nsynth_speech/{args.size} ({builder.data_dir}):")
  cli.print_stats(source)

  print("\nA few held-out-speaker examples:")
  cli.main(["show", "--size", args.size, "--data-dir", args.data_dir, "--split", "dev", "-n", "3"])

  batches = Batches.from_source(source, "dev", CharTokenizer(), PipelineConfig(batch_size=32),
                                shuffle=False, num_epochs=1)
  start, utts, audio_s = time.time(), 0, 0.0
  for batch in batches:
    utts += int((batch["feature_lengths"] > 0).sum())
    audio_s += float(batch["audio_lengths"].sum()) / 16000
  wall = time.time() - start
  print(f"\ninput pipeline over dev: {utts} utterances, {audio_s / 60:.1f} min of audio -> "
        f"log-mel batches in {wall:.1f} s (first pass, compilation included)")
  print("bucket shapes (frames, labels):", batches.feature_shapes())
  return 0


if __name__ == "__main__":
  sys.exit(main())
