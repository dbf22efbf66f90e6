"""Our training step against the same recipe written the usual PyTorch way.

  bash benchmarks/setup_torch_env.sh      # once: .venv-torch with torch and torchaudio
  .venv/bin/python -m benchmarks.train_step_vs_torch [--config rnnt] [--variant small]
      [--seconds 3.0] [--repeats 5] [--rounds 2] [--torch-python .venv-torch/bin/python]

The reference is `benchmarks/_torch_train_step.py` run in the torch environment on a batch of
the same shape (`data.batch_size` utterances of `--seconds`, 12 labels a second): torchaudio
log-mels, the same encoder, stateless prediction network and joint, torchaudio's `rnnt_loss`
on full logits, CTC, AdamW with clipping, two threads. Ours is `benchmarks.train_step`'s jitted
step. Both print their parameter counts (PyTorch's LSTM keeps two bias vectors where ours keeps
one). The two alternate for `--rounds` rounds, each the best of `--repeats` steps; prints each
round and the ratio of the bests (PyTorch's time over ours: above 1, ours is faster).
"""

import argparse
import json
import pathlib
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import best_of
from benchmarks.train_step import build, recipe, recipe_arguments, stepper, synthetic_batch
from experiments import huge_pages


def twin_spec(config, batch: dict, frames: int, repeats: int) -> dict:
  """The sizes `_torch_train_step.py` builds the PyTorch twin from."""
  m = config.model
  spec = {"kind": m.encoder, "mels": m.num_mels, "vocab": m.vocab, "pred_embed": m.pred_embed,
          "pred_hidden": m.pred_hidden, "joint_dim": m.joint_dim, "context": m.stateless_context,
          "lr": config.optim.peak_lr, "batch": int(batch["audio"].shape[0]),
          "samples": int(batch["audio"].shape[1]), "labels": int(batch["labels"].shape[1]),
          "frames": frames, "repeats": repeats}
  family = m[m.encoder].to_dict()
  if m.encoder == "lstm":
    spec.update({k: family[k] for k in ("stack", "hidden", "layers", "reduce", "reduce_after")})
  elif m.encoder == "transformer":
    spec.update({k: family[k] for k in ("dim", "heads", "ffn_mult", "layers", "chunk",
                                        "left_chunks", "subsample_kernel")})
    spec["subsample"] = list(family["subsample"])
  else:
    raise ValueError(f"no PyTorch twin of the {m.encoder!r} encoder (lstm, transformer)")
  return spec


def main():
  huge_pages.ensure()       # as the entry points train (ASR_HUGE_PAGES=0: without)
  p = argparse.ArgumentParser()
  recipe_arguments(p, repeats=5)
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--torch-python", default=".venv-torch/bin/python")
  args = p.parse_args()
  from asr import features as F
  c = recipe(args)
  batch = jax.tree.map(jnp.asarray, synthetic_batch(c.data.batch_size, args.seconds, 0, 12.0,
                                                    c.model.vocab))
  frames = int(F.log_mel(batch["audio"], batch["audio_lengths"])[0].shape[1])
  step, state = build(c)
  ours_params = int(sum(np.size(x) for x in jax.tree.leaves(state["params"])))
  one_step = stepper(step, state, batch)

  with tempfile.TemporaryDirectory() as tmp:
    spec_path = pathlib.Path(tmp) / "spec.json"
    spec_path.write_text(json.dumps(twin_spec(c, batch, frames, args.repeats)))
    helper = pathlib.Path(__file__).with_name("_torch_train_step.py")
    ours, theirs = [], []
    for r in range(args.rounds):
      ours.append(best_of(one_step, args.repeats) * 1000)
      out = subprocess.run([args.torch_python, str(helper), str(spec_path)], check=True,
                           capture_output=True, text=True).stdout
      twin = json.loads(out.strip().splitlines()[-1])
      theirs.append(min(twin["ms"]))
      print(f"round {r + 1}: ours {ours[-1]:.0f} ms, PyTorch {theirs[-1]:.0f} ms")
  print(f"{args.config}:{args.variant} (encoder {c.model.encoder}): batch {c.data.batch_size} x "
        f"{args.seconds:.1f} s, {batch['labels'].shape[1]} labels each, {frames} feature frames")
  print(f"parameters: ours {ours_params:,}, PyTorch twin {twin['params']:,} "
        f"(torch {twin['torch']}, torchaudio {twin['torchaudio']})")
  print(f"best step: ours {min(ours):.0f} ms, PyTorch {min(theirs):.0f} ms: "
        f"**{min(theirs) / min(ours):.2f}x** (PyTorch's time over ours)")


if __name__ == "__main__":
  main()
