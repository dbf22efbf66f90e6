"""RNN-T loss + gradient: this project's JAX loss against `torchaudio.functional.rnnt_loss`.

  bash benchmarks/setup_torch_env.sh          # once: .venv-torch with torch 2.9.1, torchaudio 2.9
  .venv/bin/python -m benchmarks.rnnt_loss_vs_torchaudio [--repeats 5]
  python -m benchmarks.rnnt_loss_vs_torchaudio --torch-python python   # a GPU machine whose
      # one Python has JAX with CUDA and torchaudio: both losses on the GPU

For each shape (B, T, U, V) the same random logits go to both (saved once, read by the torch
helper in its own environment), full-length utterances; the last shape has a word-piece
vocabulary (V = 500). Prints best-of-N forward+backward time on JAX's default device (the CPU:
2 threads each; a GPU: torchaudio's CUDA loss), the ratio, and the largest loss difference
(they must agree).
Then the memory of the lean path (chunked joint, only blank/label log-probs kept) against the
full-logits path at V=256, as XLA's compiled temporary-buffer sizes for value-and-grad with
respect to a joint's inputs and weights.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from asr.losses import rnnt_loss, rnnt_loss_lean
from benchmarks.timing import best_of

SHAPES = [(16, 200, 40, 30), (32, 150, 40, 30), (8, 300, 60, 256), (8, 200, 40, 500)]
TORCH_PY = pathlib.Path(__file__).resolve().parent.parent / ".venv-torch" / "bin" / "python"


def _inputs(shape, seed=0):
  b, t, u, v = shape
  rng = np.random.default_rng(seed)
  return {"logits": rng.standard_normal((b, t, u + 1, v)).astype(np.float32),
          "labels": rng.integers(1, v, (b, u)).astype(np.int32),
          "t_len": np.full(b, t, np.int32), "u_len": np.full(b, u, np.int32)}


def _time_jax(x, repeats):
  f = jax.jit(jax.value_and_grad(
      lambda lg: rnnt_loss(lg, x["labels"], x["t_len"], x["u_len"]).sum()))
  per = jax.jit(lambda lg: rnnt_loss(lg, x["labels"], x["t_len"], x["u_len"]))
  logits = jnp.asarray(x["logits"])
  jax.block_until_ready(f(logits))
  best = best_of(lambda: jax.block_until_ready(f(logits)), repeats)
  return best * 1000, np.asarray(per(logits))


def _memory(b=8, t=300, u=60, v=256, d=256, chunk=16):
  rng = np.random.default_rng(1)
  enc = jnp.asarray(rng.standard_normal((b, t, d)), jnp.float32)
  pred = jnp.asarray(rng.standard_normal((b, u + 1, d)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((d, v)) * 0.05, jnp.float32)
  labels = jnp.asarray(rng.integers(1, v, (b, u)), jnp.int32)
  tl, ul = jnp.full(b, t), jnp.full(b, u)
  joint = lambda w, e, p: jnp.tanh(e[:, :, None] + p[:, None]) @ w
  full = lambda w, e, p: rnnt_loss(joint(w, e, p), labels, tl, ul).sum()
  lean = lambda w, e, p: rnnt_loss_lean(e, p, lambda ec, pc: joint(w, ec, pc), labels, tl, ul,
                                        chunk=chunk).sum()
  sizes = {}
  for name, fn in (("full", full), ("lean", lean)):
    compiled = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2))).lower(w, enc, pred).compile()
    sizes[name] = compiled.memory_analysis().temp_size_in_bytes
  return sizes


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--torch-python", default=str(TORCH_PY),
                 help="a Python with torch and torchaudio (default: .venv-torch's)")
  args = p.parse_args()
  torch_device = "cuda" if jax.default_backend() == "gpu" else "cpu"
  torch_results = None
  if shutil.which(args.torch_python) or pathlib.Path(args.torch_python).exists():
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "inputs.npz")
      arrays = {}
      for shape in SHAPES:
        for k, v in _inputs(shape).items():
          arrays[f"{'x'.join(map(str, shape))}/{k}"] = v
      np.savez(path, **arrays)
      helper = str(pathlib.Path(__file__).parent / "_torchaudio_rnnt.py")
      out = subprocess.run([args.torch_python, helper, path, str(args.repeats), torch_device],
                           capture_output=True, text=True, check=True)
      torch_results = json.loads(out.stdout.strip().splitlines()[-1])
  else:
    print(f"no {args.torch_python}: run benchmarks/setup_torch_env.sh for the torchaudio "
          "reference")
  print(f"JAX {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} cores; "
        f"torchaudio on {torch_device}")
  print(f"{'(B, T, U, V)':<20} {'JAX ms':>9} {'torchaudio ms':>14} {'ratio':>7} {'max |dloss|':>12}")
  for shape in SHAPES:
    name = "x".join(map(str, shape))
    ms, loss = _time_jax(_inputs(shape), args.repeats)
    if torch_results:
      ref = torch_results[name]
      diff = float(np.max(np.abs(loss - np.asarray(ref["loss"]))))
      print(f"{str(shape):<20} {ms:9.1f} {ref['ms']:14.1f} {ref['ms'] / ms:6.1f}x {diff:12.2e}")
    else:
      print(f"{str(shape):<20} {ms:9.1f}")
  if torch_results:
    first = next(iter(torch_results.values()))
    print(f"(torch {first['torch']}, torchaudio {first['torchaudio']})")
  sizes = _memory()
  print(f"peak temporary memory, value+grad at (8, 300, 60, 256), joint dim 256: full logits "
        f"{sizes['full'] / 2**20:.0f} MiB, lean {sizes['lean'] / 2**20:.0f} MiB "
        f"= {sizes['lean'] / sizes['full']:.1%} of full")


if __name__ == "__main__":
  main()
