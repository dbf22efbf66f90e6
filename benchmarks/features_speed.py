"""Feature extraction speed: jitted JAX log-mels vs librosa on the same audio.

  .venv/bin/python -m benchmarks.features_speed [--batch 32] [--seconds 8] [--repeats 5]

Prints audio-seconds per wall-second for `asr.features.featurize` (jitted, compile excluded) and
for the reference, `librosa.feature.melspectrogram` + log (NumPy, one utterance at a time, as a
PyTorch/NumPy front end would), and their ratio. (Normalization is the model's, not here.)
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import best_of


def main(argv=None):
  import librosa
  from asr.features import featurize
  p = argparse.ArgumentParser()
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--seconds", type=float, default=8.0)
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args(argv)
  n = int(args.seconds * 16000)
  rng = np.random.default_rng(0)
  audio = (rng.standard_normal((args.batch, n)) * 0.1).astype(np.float32)
  lengths = np.full(args.batch, n, np.int32)
  total_audio = args.batch * args.seconds

  jax.block_until_ready(featurize(jnp.asarray(audio), jnp.asarray(lengths)))  # compile
  ours = best_of(lambda: jax.block_until_ready(featurize(jnp.asarray(audio), jnp.asarray(lengths))),
                  args.repeats)

  def reference():
    for y in audio:
      s = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, hop_length=160, win_length=400,
                                         center=False, n_mels=80)
      np.log(np.maximum(s, 1e-6))
  reference()
  ref = best_of(reference, args.repeats)
  print(f"device: {jax.devices()[0].platform}, batch {args.batch} x {args.seconds:.0f} s")
  print(f"asr.features.featurize (jit): {total_audio / ours:10.0f} audio-s per s")
  print(f"librosa reference           : {total_audio / ref:10.0f} audio-s per s")
  print(f"ratio (ours / librosa)      : {ref / ours:10.2f}x")


if __name__ == "__main__":
  main()
