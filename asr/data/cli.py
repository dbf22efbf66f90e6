"""`asr-data`: build the embedded corpus and look at examples.

  asr-data build --corpus synth --size tiny|small|full [--data-dir DIR] [--seed N] [--workers N]
  asr-data build --corpus synth --size full_words   # 30% of training sentences general English
  asr-data show  --corpus synth --size tiny [--split dev] [-n 5] [--wav-dir DIR]
  asr-data show  --corpus librispeech --split dev_clean
  asr-data manifest --folder DIR --out M.jsonl [--split train]   # x.wav + x.txt pairs
  asr-data build --corpus manifest --manifest M.jsonl --name NAME [--skip-bad]
  asr-data show  --corpus manifest --name NAME --split dev
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _dataset_name(args) -> str:
  if args.corpus == "librispeech":
    return "librispeech"
  if args.corpus == "manifest":
    return f"manifest/{args.name}"
  return f"synth_speech/{args.size}" + (f"_seed{args.seed}" if args.seed else "")


def split_stats(source, split: str) -> dict:
  """Utterances, hours and distinct speakers of one split (reads every example once)."""
  seconds, speakers, n = 0.0, set(), 0
  for ex in source.examples(split):
    n += 1
    seconds += len(ex["audio"]) / source.sample_rate
    speakers.add(ex["speaker"])
  return {"utterances": n, "hours": seconds / 3600, "speakers": len(speakers)}


def print_stats(source) -> dict:
  stats = {split: split_stats(source, split) for split in source.splits}
  print(f"{'split':<12} {'utterances':>10} {'hours':>8} {'speakers':>9}")
  for split, s in stats.items():
    print(f"{split:<12} {s['utterances']:>10} {s['hours']:>8.2f} {s['speakers']:>9}")
  return stats


def build(args) -> int:
  from asr.data import synth_tfds
  from asr.data.sources import open_source
  if args.corpus == "manifest":
    return _build_manifest(args)
  start = time.time()
  builder, built = synth_tfds.ensure_built(args.size, args.seed, args.data_dir, args.workers)
  if built:
    print(f"built {_dataset_name(args)} in {time.time() - start:.1f} s -> {builder.data_dir}")
  else:
    print(f"{_dataset_name(args)} is already built in {builder.data_dir}")
  print_stats(open_source(_dataset_name(args), args.data_dir))
  return 0


def _build_manifest(args) -> int:
  from asr.data import manifest
  from asr.data.sources import open_source
  if not args.manifest or not args.name:
    print("--corpus manifest needs --manifest M.jsonl and --name NAME", file=sys.stderr)
    return 2
  start = time.time()
  try:
    builder = manifest.build(args.manifest, args.name, args.data_dir, args.skip_bad)
  except manifest.ManifestError as e:
    print(f"error: {e}\n(--skip-bad leaves bad rows out and counts them)", file=sys.stderr)
    return 1
  skipped = builder.info.metadata["skipped"]
  print(f"built manifest/{args.name} in {time.time() - start:.1f} s -> {builder.data_dir}")
  if skipped:
    print(f"skipped {sum(skipped.values())} bad rows: "
          + ", ".join(f"{n} {kind}" for kind, n in sorted(skipped.items())))
  print_stats(open_source(_dataset_name(args), args.data_dir))
  return 0


def write_manifest(args) -> int:
  from asr.data import manifest
  try:
    n = manifest.write_folder_manifest(args.folder, args.out, args.split, args.speaker)
  except manifest.ManifestError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"wrote {n} rows to {args.out}")
  return 0


def show(args) -> int:
  from asr.data import conditions
  from asr.data.sources import open_source
  import numpy as np
  source = open_source(_dataset_name(args), args.data_dir)
  split = args.split or {"librispeech": "dev_clean"}.get(args.corpus, "dev")
  wav_dir = pathlib.Path(args.wav_dir) if args.wav_dir else None
  if wav_dir:
    wav_dir.mkdir(parents=True, exist_ok=True)
  accents = collections.Counter()
  for i, ex in enumerate(source.examples(split)):
    if i >= args.num:
      break
    seconds = len(ex["audio"]) / source.sample_rate
    accents[ex["accent"]] += 1
    condition = conditions.condition(ex)
    flags = f"  [{condition}]" if condition else ""
    print(f"{ex['id']}  {seconds:5.2f}s  {ex['speaker']}{flags}\n    {ex['text']}")
    if ex["entities"]:
      print(f"    entities: {', '.join(ex['entities'])}")
    if ex["bias_phrases"]:
      print(f"    bias phrases: {', '.join(ex['bias_phrases'])}")
    if wav_dir:
      import soundfile
      path = wav_dir / f"{ex['id']}.wav"
      soundfile.write(path, np.asarray(ex["audio"]), source.sample_rate, subtype="PCM_16")
      print(f"    wrote {path}")
  return 0


def main(argv=None) -> int:
  from asr.data.sources import default_data_dir
  from asr.data.synth_corpus import SPECS
  parser = argparse.ArgumentParser(prog="asr-data", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  helps = {"build": "synthesize the embedded corpus (eSpeak NG), or read a manifest's audio, "
                    "into a TFDS dataset",
           "show": "print a split's first examples (and write them as WAV files)"}
  for name in ("build", "show"):
    p = sub.add_parser(name, help=helps[name], description=helps[name])
    # Only the synthetic corpus is built here (LibriSpeech: `tfds build librispeech`).
    p.add_argument("--corpus", default="synth",
                   choices=["synth", "manifest"] + (["librispeech"] if name == "show" else []),
                   help="the embedded synthetic corpus, a corpus of your own from a manifest "
                        "(asr/data/manifest.py), or (show) LibriSpeech as TFDS built it")
    p.add_argument("--name", default=None,
                   help="with --corpus manifest: the dataset's name (manifest/NAME)")
    p.add_argument("--size", choices=list(SPECS), default="tiny",
                   help="the synthetic corpus's variant (tiny: tests; small: the demo; full: "
                        "the hour-long recipes)")
    p.add_argument("--seed", type=int, default=0,
                   help="another draw of the same corpus (a dataset named ..._seed<N>)")
    p.add_argument("--data-dir", default=default_data_dir(),
                   help="where TFDS datasets are built and read")
    if name == "build":
      p.add_argument("--workers", type=int, default=None,
                     help="generation processes (default: all cores); the bytes do not depend on it")
      p.add_argument("--manifest", default=None,
                     help="with --corpus manifest: the JSON-lines manifest (one object a line: "
                          "audio, text, optional speaker, split, duration, id)")
      p.add_argument("--skip-bad", action="store_true",
                     help="with --corpus manifest: leave bad rows out and count them, instead "
                          "of stopping at the first with an error naming its line")
    else:
      p.add_argument("--split", default=None,
                     help="train, dev, test, test_accent or test_handwritten (LibriSpeech: "
                          "dev_clean, ...); default dev (dev_clean)")
      p.add_argument("-n", "--num", type=int, default=5, help="examples to print")
      p.add_argument("--wav-dir", default=None, help="also write the examples as WAV files here")
  p = sub.add_parser("manifest", help="write a manifest for a folder of x.wav + x.txt pairs",
                     description="write a manifest for a folder of x.wav + x.txt pairs")
  p.add_argument("--folder", required=True, help="searched recursively for audio files")
  p.add_argument("--out", required=True, help="the manifest to write (JSON lines)")
  p.add_argument("--split", default="train", help="the split every row goes to")
  p.add_argument("--speaker", default=None,
                 help="every row's speaker (default: the name of the file's folder)")
  args = parser.parse_args(argv)
  return {"build": build, "show": show, "manifest": write_manifest}[args.command](args)


if __name__ == "__main__":
  sys.exit(main())
