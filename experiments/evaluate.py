"""`asr-eval --workdir W --split test [--decoder greedy|beam] [--beam 4] [--json OUT]`
`asr-eval --workdir W --split test --backend int8 [--profile npu]`
`asr-eval --workdir W --diagnose [--utterances 192]`

Evaluates a run's newest checkpoint on a split; prints the summary, writes it as JSON (default
`W/eval/<split>_<decoder>.json`) and the hypotheses beside it (`.hyps.tsv`). The summary breaks
WER down by accent, speaker and acoustic condition (`per_condition`: noise kind, SNR band,
reverberation, whisper) and gives the model's size as a device would hold it: parameters,
sparsity (overall and per weight matrix), bytes as float32, dense int8 and sparse int8
(`compression.size`), and the latency a user would feel on a device profile (`--profile`,
default `cpu650`: `latency_ms_p50`, `_p90`, `_mean`, `_max`; `hardware.latency` simulates each
utterance's frames as they arrive and queue, from the work the model did on each).

`--backend int8` runs the model as the int8 processor does (`hardware/int8_backend.py`: scales
calibrated on `--calibration-batches` training batches, integer encoder, prediction network and
joint; greedy or beam search) and adds `model_bytes` (its weights in the compressed format),
`macs_per_frame_dense` and `macs_per_frame_executed` (the encoder's per output frame, averaged
over the split's frames as `flops_per_frame` is; executed: zero weights skipped); the latency is
simulated on the NPU profile by default, and `stage_errors`: the relative RMS error of the
integer encoder against the float one after each stage (LSTM layer and norm; a Transformer's
sub-blocks), each fed its own outputs, on the split's first batch. Written to
`W/eval/<split>_<decoder>_int8.json`.

`--gate-threshold T` evaluates a gated run (`model.transformer.gates`) with each sub-block open
where its arbitrator's logit is above T instead of 0, on either backend: the compute-versus-WER
trade-off of one trained model (`flops_per_frame` and `open_fraction` move with T); written to
`..._gate<T>.json`.

`--diagnose` separates memorizing utterances from failing on new speech: WER on the first
`--utterances` of (a) the training split, (b) new sentences spoken by the training speakers
(synthesized now, past the corpus's end; synthetic corpora only), (c) the held-out-speaker test
split, (d) the held-out accent and (e) sentences written by hand outside the generator
(`test_handwritten`, synthetic corpora from version 1.2.0), written to
`W/eval/diagnosis_<decoder>.json` with each set's summary (and its hypotheses beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from experiments import huge_pages  # noqa: E402


def main(argv=None) -> int:
  if argv is None:            # the command line, not a caller in this process
    huge_pages.ensure()
  p = argparse.ArgumentParser(prog="asr-eval", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True,
                 help="a training run's directory (its config.json and checkpoints/)")
  p.add_argument("--split", default="test",
                 help="the dataset's split: train, dev, test, test_accent or test_handwritten "
                      "for the synthetic corpus; dev_clean, dev_other, test_clean or test_other "
                      "for LibriSpeech")
  p.add_argument("--decoder", choices=["greedy", "beam"], default="greedy",
                 help="greedy search, or beam search over --beam hypotheses")
  p.add_argument("--beam", type=int, default=4, help="with --decoder beam: the beam's width")
  p.add_argument("--max-symbols", type=int, default=None,
                 help="labels emitted per frame at most (default: the run's "
                      "train.max_symbols)")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
  p.add_argument("--json", default=None, help="where to write the summary")
  p.add_argument("--data-dir", default=None, help="override the run's data dir")
  p.add_argument("--dataset", default=None,
                 help="evaluate on another dataset than the run's (e.g. synth_speech/small for "
                      "a run trained on synth_speech/full); the summary is written as "
                      "<dataset>_<split>_<decoder>.json")
  p.add_argument("--max-batches", type=int, default=0,
                 help="decode only the split's first N batches (0: all)")
  p.add_argument("--diagnose", action="store_true",
                 help="WER on training utterances, new sentences of the training speakers, "
                      "held-out speakers, the held-out accent and hand-written sentences")
  p.add_argument("--utterances", type=int, default=192,
                 help="with --diagnose: utterances per set")
  p.add_argument("--gate-threshold", type=float, default=None, metavar="T",
                 help="a gated run (model.transformer.gates) with each sub-block open where its "
                      "gate's logit is above T rather than 0: one trained model's compute "
                      "against WER (negative: more open; -100: every gate); the summary goes to "
                      "<split>_<decoder>[_int8]_gate<T>.json")
  p.add_argument("--backend", choices=["float", "int8"], default="float",
                 help="int8: run the model as the int8 processor does (hardware/int8_backend.py:"
                      " LSTM, Transformer and Conformer transducers), scales calibrated on "
                      "training audio")
  p.add_argument("--calibration-batches", type=int, default=4,
                 help="with --backend int8: training batches the activation scales come from")
  p.add_argument("--profile", default=None,
                 help="device profile the latency is simulated on: cpu650 (the float backend's "
                      "default), npu (int8's), or a JSON file (hardware/profiles.py)")
  args = p.parse_args(argv)

  from absl import logging
  logging.set_verbosity(logging.WARNING)
  from tqdm.auto import tqdm
  from asr.data.pipeline import Batches
  from asr.training.evaluate import evaluate, write_hypotheses
  from asr.training.loop import load_for_inference, open_dataset, pipeline_config, run_tokenizer
  from compression.size import model_size

  from asr.training.metrics import latency_summary
  from hardware.profiles import load_profile

  try:
    profile = load_profile(args.profile or {"float": "cpu650", "int8": "npu"}[args.backend])
  except ValueError as e:
    p.error(str(e))
  if args.backend == "int8" and args.diagnose:
    p.error("--backend int8 evaluates one split at a time (no --diagnose on the int8 path yet)")
  config, graphdef, variables, step = load_for_inference(args.workdir, args.step)
  if args.gate_threshold is not None:
    if args.diagnose:
      p.error("--diagnose runs the model as trained: it takes no --gate-threshold")
    variables = with_gate_threshold(graphdef, variables, args.gate_threshold)
    if variables is None:
      p.error(f"--gate-threshold: the run in {args.workdir} has no gates "
              "(model.transformer.gates or model.conformer.gates is off)")
  if args.data_dir:
    config.data.data_dir = args.data_dir
  prefix = ""
  if args.dataset and args.dataset != config.data.dataset:
    if args.diagnose:
      p.error("--diagnose measures a run on its own training data: it takes no --dataset")
    config.data.dataset = args.dataset
    prefix = args.dataset.replace("/", "_") + "_"
  source = open_dataset(config)
  if args.diagnose:
    return diagnose(args, config, graphdef, variables, step, source)
  tokenizer = run_tokenizer(config, args.workdir)
  recognize, model_bytes, int8_fields = None, None, {}
  if args.backend == "int8":
    import itertools
    from hardware.int8_backend import (compressed_bytes, int8_recognizer, model_work,
                                       weight_group)
    calibration = Batches.from_source(source, config.data.train_split, tokenizer,
                                      pipeline_config(config, False), shuffle=False,
                                      num_epochs=1, features=None)
    try:
      recognize = int8_recognizer(
          graphdef, variables, itertools.islice(calibration, args.calibration_batches),
          decoder=args.decoder, beam=args.beam,
          max_symbols=args.max_symbols or config.train.max_symbols)
    finally:
      calibration.close()
    model_bytes = compressed_bytes(recognize.model)
    stages = first_batch_stage_errors(source, args.split, tokenizer, config, graphdef,
                                      variables, recognize.model)
    # MACs on zero weights, per encoder frame: what skipping them saves on every frame.
    skipped = (model_work(recognize.model).encoder_frame
               - model_work(recognize.model, True).encoder_frame)
    int8_fields = dict(model_bytes=model_bytes, weight_group=weight_group(recognize.model),
                       calibration_batches=args.calibration_batches, stage_errors=stages)
  latency = model_latency(graphdef, variables, profile, model_bytes)
  batches = Batches.from_source(source, args.split, tokenizer, pipeline_config(config, False),
                                shuffle=False, num_epochs=1, features=None)
  total = source.splits.get(args.split)
  if args.max_batches:
    total = min(total, args.max_batches * config.data.eval_batch_size)
  bar = tqdm(total=total, desc=f"decode {args.split} ({args.decoder})", unit="utt")
  summary, rows = evaluate(graphdef, variables, batches, tokenizer, decoder=args.decoder,
                           beam=args.beam, max_symbols=args.max_symbols or config.train.max_symbols,
                           max_batches=args.max_batches, latency=latency,
                           recognize=recognize, backend=args.backend,
                           progress=lambda n: bar.update(n - bar.n))
  bar.close()
  summary.update(latency_summary([r["latency_ms"] / 1000 for r in rows]), profile=profile.name)
  if int8_fields:
    macs = summary["flops_per_frame"] / 2
    int8_fields.update(macs_per_frame_dense=macs, macs_per_frame_executed=macs - skipped)
  if args.gate_threshold is not None:
    summary["gate_threshold"] = args.gate_threshold
  summary.update(split=args.split, dataset=config.data.dataset, step=step,
                 skipped=batches.problems.as_metrics(),
                 beam=args.beam if args.decoder == "beam" else None, **model_size(variables[0]),
                 **int8_fields)
  suffix = "_int8" if args.backend == "int8" else ""
  if args.gate_threshold is not None:
    suffix += f"_gate{args.gate_threshold:g}"
  out = pathlib.Path(args.json or pathlib.Path(args.workdir) / "eval" /
                     f"{prefix}{args.split}_{args.decoder}{suffix}.json")
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(summary, indent=2))
  hyps = out.with_suffix(".hyps.tsv")
  write_hypotheses(hyps, rows)
  print(f"{args.split} ({args.decoder}, step {step}): WER {summary['wer']:.4f}  CER "
        f"{summary['cer']:.4f}  S/D/I {summary['substitutions']}/{summary['deletions']}/"
        f"{summary['insertions']}  over {summary['num_utterances']} utterances")
  print(f"flops/s of audio {summary['flops_per_second']:.3g} (encoder flops/frame "
        f"{summary['flops_per_frame']:.3g})  RTF {summary['rtf']:.4f}  backend {summary['backend']}")
  if summary["latency_ms_p50"] is not None:
    print(f"latency on {profile.name}: p50 {summary['latency_ms_p50']:.3g} ms  p90 "
          f"{summary['latency_ms_p90']:.3g} ms  max {summary['latency_ms_max']:.3g} ms")
  print(f"{summary['num_params']} parameters, sparsity {summary['sparsity']:.3f}; bytes as "
        f"float32 {summary['model_bytes_float32']}, int8 {summary['model_bytes_int8']}, "
        f"sparse int8 {summary['model_bytes_int8_sparse']}")
  if int8_fields:
    print(f"int8 model in the compressed format: {summary['model_bytes']} bytes; encoder MACs "
          f"per frame {summary['macs_per_frame_dense']:.0f} dense, "
          f"{summary['macs_per_frame_executed']:.0f} executed (zeros skipped)")
    print("int8 encoder's error against the float one (relative RMS, first batch): " + ", ".join(
        f"{k} {v:.2%}" for k, v in summary["stage_errors"].items()))
  for accent, wer in summary["per_accent"].items():
    print(f"  {accent:<16} WER {wer:.4f}")
  print(f"wrote {out} and {hyps}")
  return 0


def with_gate_threshold(graphdef, variables, threshold: float):
  """`variables` (params, model_state) with every gate's hard threshold at `threshold`
  (`asr.models.gates.shift_gate_threshold`), or None when the model has no gates."""
  from flax import nnx
  from asr.models.gates import shift_gate_threshold
  from asr.training.train_step import split_model
  model = nnx.merge(graphdef, *variables)
  if not shift_gate_threshold(model, threshold):
    return None
  return split_model(model)[1:]


def first_batch_stage_errors(source, split, tokenizer, config, graphdef, variables, int_model):
  """`hardware.int8_backend.stage_errors` on the first batch of `split`."""
  import jax.numpy as jnp
  from flax import nnx
  from asr import features as F
  from asr.data.pipeline import Batches
  from asr.training.loop import pipeline_config
  from hardware.int8_backend import stage_errors
  batches = Batches.from_source(source, split, tokenizer, pipeline_config(config, False),
                                shuffle=False, num_epochs=1, features=None)
  try:
    batch = next(iter(batches))
  finally:
    batches.close()
  model = nnx.merge(graphdef, *variables)
  feats, lengths = F.log_mel(jnp.asarray(batch["audio"]), jnp.asarray(batch["audio_lengths"]),
                             model.cfg.features)
  return stage_errors(model, int_model, feats, lengths)


def model_latency(graphdef, variables, profile, model_bytes=None):
  """The latency callback of `evaluate` for this model on `profile`: frames of the encoder's
  frame duration, released a streaming chunk at a time; on an NPU, weights streamed every chunk
  when the model's compressed weights (`model_bytes`; default: the float model's sparse int8
  size) do not fit on chip."""
  from flax import nnx
  from compression.size import model_size
  from hardware.latency import encoder_chunk, streaming_latency

  encoder = nnx.merge(graphdef, *variables).encoder
  fetch = 0
  if profile.kind == "npu":
    fetch = profile.weight_bytes_per_chunk(
        model_bytes or model_size(variables[0])["model_bytes_int8_sparse"])
  return streaming_latency(profile, encoder.frame_seconds, encoder_chunk(encoder), fetch)


def latency_for(profile_name: str):
  """`latency(graphdef, variables)` for `asr.training.loop.Trainer`: each evaluation's latency
  on the named profile; None for `""` (no simulation)."""
  if not profile_name:
    return None
  from hardware.profiles import load_profile
  profile = load_profile(profile_name)
  return lambda graphdef, variables: model_latency(graphdef, variables, profile)


DIAGNOSIS_SETS = (("train", "training utterances"),
                  ("train_new_sentences", "new sentences, training speakers"),
                  ("test", "held-out speakers"), ("test_accent", "held-out accent"),
                  ("test_handwritten", "hand-written sentences, held-out speakers"))


def diagnose(args, config, graphdef, variables, step: int, source) -> int:
  """`--diagnose`: the four sets of DIAGNOSIS_SETS, a summary each, in one report."""
  import itertools
  from tqdm.auto import tqdm
  from asr.data.pipeline import Batches
  from asr.data.sources import SYNTH, new_sentences
  from asr.training.evaluate import evaluate, write_hypotheses
  from asr.training.loop import pipeline_config, run_tokenizer

  tokenizer, n = run_tokenizer(config, args.workdir), args.utterances
  out_dir = pathlib.Path(args.workdir) / "eval"
  out_dir.mkdir(parents=True, exist_ok=True)
  report = {"step": step, "decoder": args.decoder, "utterances": n, "sets": {}}
  for name, meaning in DIAGNOSIS_SETS:
    if name == "train_new_sentences":
      if not source.name.startswith(SYNTH):
        print(f"{name}: skipped ({source.name} is recorded speech: nothing to synthesize)")
        report["sets"][name] = None
        continue
      examples = lambda epoch: new_sentences(source.name, "train", n)
    elif name not in source.splits:
      print(f"{name}: skipped ({source.name} has no such split)")
      report["sets"][name] = None
      continue
    else:
      examples = lambda epoch, split=name: itertools.islice(source.examples(split), n)
    batches = Batches(examples, tokenizer, pipeline_config(config, False), features=None,
                      num_epochs=1, source_sample_rate=source.sample_rate)
    bar = tqdm(total=n, desc=f"{name} ({args.decoder})", unit="utt")
    summary, rows = evaluate(graphdef, variables, batches, tokenizer, decoder=args.decoder,
                             beam=args.beam,
                             max_symbols=args.max_symbols or config.train.max_symbols,
                             progress=lambda k: bar.update(k - bar.n))
    bar.close()
    summary.update(set=name, meaning=meaning, skipped=batches.problems.as_metrics())
    report["sets"][name] = summary
    write_hypotheses(out_dir / f"diagnosis_{name}_{args.decoder}.hyps.tsv", rows)
  out = pathlib.Path(args.json or out_dir / f"diagnosis_{args.decoder}.json")
  out.write_text(json.dumps(report, indent=2))
  print(f"\ndiagnosis of {args.workdir} (step {step}, {args.decoder}), {n} utterances a set:")
  for name, meaning in DIAGNOSIS_SETS:
    r = report["sets"][name]
    if r is not None:
      print(f"  {meaning:<34} WER {r['wer']:.2%}  CER {r['cer']:.2%}  "
            f"({r['num_utterances']} utterances)")
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
