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
from flax import nnx

from benchmarks.timing import best_of


def matmul_peak(n=2048, repeats=10):
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  jax.block_until_ready(f(a))
  return 2 * n**3 / best_of(lambda: jax.block_until_ready(f(a)), repeats)


def main():
  from experiments.configs.rnnt import get_config
  from asr.training import train_step as ts
  from asr.training.loop import augment_config, build_model
  p = argparse.ArgumentParser()
  p.add_argument("--variant", default="small")
  p.add_argument("--seconds", type=float, default=3.0)
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--enc-reduce", type=int, default=None,
                 help="override model.enc_reduce (1: no time reduction inside the encoder)")
  args = p.parse_args()
  c = get_config(args.variant)
  if args.enc_reduce is not None:
    c.model.enc_reduce = args.enc_reduce
  b, samples = c.data.batch_size, int(args.seconds * 16000)
  u = int(args.seconds * 12)
  rng = np.random.default_rng(0)
  batch = {"audio": jnp.asarray((rng.standard_normal((b, samples)) * 3000).astype(np.int16)),
           "audio_lengths": jnp.full((b,), samples, jnp.int32),
           "labels": jnp.asarray(rng.integers(1, 29, (b, u)), jnp.int32),
           "label_lengths": jnp.full((b,), u, jnp.int32)}
  model = build_model(c)
  graphdef, _ = nnx.split(model)
  tx = ts.make_optimizer(ts.learning_rate_schedule(1e-3, 10, 100), 1e-4, 5.0)
  state = ts.init_train_state(model, tx, 0)
  step = jax.jit(ts.make_train_step(graphdef, tx, ts.StepConfig(
      ctc_weight=c.model.ctc_weight, augment=augment_config(c))), donate_argnums=0)
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
  m_cfg = c.model
  ctc_frames = -(-int(num_frames(samples)) // m_cfg.stack)  # the CTC head's (pre-reduction) rate
  frames = -(-ctc_frames // m_cfg.enc_reduce)               # the encoder's output frames
  ctc_flops = 2 * m_cfg.enc_hidden * m_cfg.vocab * ctc_frames if m_cfg.ctc_weight > 0 else 0
  analytic = b * (3 * (frames * (model.encoder.flops_per_frame()
                                 + 2 * m_cfg.enc_hidden * m_cfg.joint_dim) + ctc_flops)
                  + 4 * frames * (u + 1) * 2 * m_cfg.joint_dim * m_cfg.vocab)
  xla_flops, flops = flops, analytic
  print(f"{args.variant} (enc_reduce {c.model.enc_reduce}): batch {b} x {args.seconds:.1f} s, "
        f"{u} labels each, "
        f"{jax.devices()[0].platform}")
  print(f"step: {best * 1000:.0f} ms = {b * args.seconds / best:.0f} audio-s per s, "
        f"{flops / 1e9:.1f} GFLOP per step (analytic; XLA's cost analysis: {xla_flops / 1e9:.1f})")
  print(f"achieved {flops / best / 1e9:.1f} GFLOP/s; float32 matmul peak (2048^3 jnp.dot, "
        f"same run) {peak / 1e9:.1f} GFLOP/s; share {flops / best / peak:.1%}")


if __name__ == "__main__":
  main()
