"""`asr-transcribe --workdir W AUDIO...`: one line per file, `path<TAB>transcript`.

Files are read with libsndfile (WAV, FLAC, OGG, ...) and resampled to 16 kHz when needed. A file
that cannot be read gets an error on stderr naming it; the others are still transcribed, and the
exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from experiments import huge_pages  # noqa: E402


def main(argv=None) -> int:
  if argv is None:            # the command line, not a caller in this process
    huge_pages.ensure()
  p = argparse.ArgumentParser(prog="asr-transcribe", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True,
                 help="a training run's directory (its newest checkpoint is used)")
  p.add_argument("--decoder", choices=["greedy", "beam"], default="greedy",
                 help="greedy search, or beam search over --beam hypotheses")
  p.add_argument("--beam", type=int, default=4, help="with --decoder beam: the beam's width")
  p.add_argument("audio", nargs="+", help="audio files (WAV, FLAC, OGG, ...; any sample rate)")
  args = p.parse_args(argv)

  from absl import logging
  logging.set_verbosity(logging.WARNING)
  import jax.numpy as jnp
  import numpy as np
  from asr.data.audio_io import AudioFileError, load_audio
  from asr.training.evaluate import make_recognizer
  from asr.training.loop import load_for_inference, run_tokenizer

  config, graphdef, variables, _ = load_for_inference(args.workdir)
  recognize = make_recognizer(graphdef, args.decoder, args.beam, config.train.max_symbols)
  tokenizer = run_tokenizer(config, args.workdir)
  from tqdm.auto import tqdm
  failed = 0
  # Progress (with ETA) on stderr for batches of files; transcripts stay alone on stdout.
  for path in tqdm(args.audio, desc="transcribe", unit="file", file=sys.stderr,
                   disable=len(args.audio) < 3, leave=False):
    try:
      audio = load_audio(path)
    except AudioFileError as e:
      print(f"asr-transcribe: {e}", file=sys.stderr)
      failed += 1
      continue
    # Pad to a multiple of one second: a handful of shapes, not one compilation per file.
    padded = np.zeros(max(16000, -(-len(audio) // 16000) * 16000), np.float32)
    padded[: len(audio)] = audio
    out = recognize(variables, jnp.asarray(padded[None]), jnp.asarray([len(audio)], jnp.int32))
    tokens = np.asarray(out["tokens"])[0]
    lengths = np.asarray(out["lengths"])[0]
    if args.decoder == "beam":
      tokens, lengths = tokens[0], lengths[0]
    tqdm.write(f"{path}\t{tokenizer.decode(tokens[:lengths])}", file=sys.stdout)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
