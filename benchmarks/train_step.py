"""Training-step throughput and its share of this machine's float32 matmul peak.

  .venv/bin/python -m benchmarks.train_step [--variant small] [--seconds 3.0] [--repeats 10]
      [--enc-reduce 1]

Times the jitted training step of `experiments/configs/rnnt.py:<variant>` (features, encoder,
stateless prediction network, lean RNN-T + CTC loss, backward, AdamW) on a batch of
`batch_size` utterances of `--seconds` audio with 12 characters per second of labels, state
donated as in training. FLOPs per step are counted analytically from the layer shapes (the
matmuls: encoder LSTMs and CTC head x3 for forward and backward, the joint's output layer x4 as
the lean loss recomputes it in the backward pass); XLA's cost analysis is printed beside it but
counts a scan's body once, not once per step, so it undercounts recurrent models. The
reference, measured in the same run: the best float32 matmul rate of a 2048 x 2048 x 2048
`jnp.dot` on this machine. Prints audio-s/s, achieved FLOP/s, and the share of that peak.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import best_of


def matmul_peak(n=2048, repeats=10):
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  jax.block_until_ready(f(a))
  return 2 * n**3 / best_of(lambda: jax.block_until_ready(f(a)), repeats)


def synthetic_batch(batch_size: int, seconds: float, seed: int = 0) -> dict:
  """`batch_size` utterances of `seconds` noise with 12 labels per second, int16 like the corpus."""
  samples, u = int(seconds * 16000), int(seconds * 12)
  rng = np.random.default_rng(seed)
  return {"audio": (rng.standard_normal((batch_size, samples)) * 3000).astype(np.int16),
          "audio_lengths": np.full((batch_size,), samples, np.int32),
          "labels": rng.integers(1, 29, (batch_size, u)).astype(np.int32),
          "label_lengths": np.full((batch_size,), u, np.int32)}


def build(config):
  """(jitted donated step, initial state) of a config, as the trainer builds them."""
  from flax import nnx
  from asr.training import train_step as ts
  from asr.training.loop import build_model, build_step
  model = build_model(config)
  step, tx, _ = build_step(config, nnx.graphdef(model))
  return jax.jit(step, donate_argnums=0), ts.init_train_state(model, tx, 0)


def main():
  from experiments.configs.rnnt import get_config
  from asr.training.loop import loss_weights
  p = argparse.ArgumentParser()
  p.add_argument("--variant", default="small")
  p.add_argument("--seconds", type=float, default=3.0)
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--enc-reduce", type=int, default=None,
                 help="override model.lstm.reduce (1: no time reduction inside the encoder)")
  args = p.parse_args()
  c = get_config(args.variant)
  if args.enc_reduce is not None:
    c.model.lstm.reduce = args.enc_reduce
  b, samples = c.data.batch_size, int(args.seconds * 16000)
  u = int(args.seconds * 12)
  batch = jax.tree.map(jnp.asarray, synthetic_batch(b, args.seconds))
  step, state = build(c)
  compiled = step.lower(state, batch).compile()
  flops = compiled.cost_analysis()
  flops = (flops[0] if isinstance(flops, (list, tuple)) else flops)["flops"]
  holder = {"state": state}

  def one_step():
    holder["state"], m = step(holder["state"], batch)  # the state is donated: keep the new one
    jax.block_until_ready(m)
  one_step()
  best = best_of(one_step, args.repeats)
  peak = matmul_peak()
  from asr.features import num_frames
  from asr.training.loop import build_model
  m_cfg, lstm = c.model, c.model.lstm
  encoder_flops = build_model(c).encoder.flops_per_frame()
  ctc_frames = -(-int(num_frames(samples)) // lstm.stack)  # the CTC head's (pre-reduction) rate
  frames = -(-ctc_frames // lstm.reduce)                    # the encoder's output frames
  ctc = "ctc" in loss_weights(c)
  ctc_flops = 2 * lstm.hidden * m_cfg.vocab * ctc_frames if ctc else 0
  analytic = b * (3 * (frames * (encoder_flops + 2 * lstm.hidden * m_cfg.joint_dim) + ctc_flops)
                  + 4 * frames * (u + 1) * 2 * m_cfg.joint_dim * m_cfg.vocab)
  xla_flops, flops = flops, analytic
  print(f"{args.variant} (lstm.reduce {lstm.reduce}): batch {b} x {args.seconds:.1f} s, "
        f"{u} labels each, "
        f"{jax.devices()[0].platform}")
  print(f"step: {best * 1000:.0f} ms = {b * args.seconds / best:.0f} audio-s per s, "
        f"{flops / 1e9:.1f} GFLOP per step (analytic; XLA's cost analysis: {xla_flops / 1e9:.1f})")
  print(f"achieved {flops / best / 1e9:.1f} GFLOP/s; float32 matmul peak (2048^3 jnp.dot, "
        f"same run) {peak / 1e9:.1f} GFLOP/s; share {flops / best / peak:.1%}")


if __name__ == "__main__":
  main()
