"""The transducer joint: `logits = W_out tanh(W_e h_t + W_p g_u)`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from asr.models.dense import Dense


class Joint(nnx.Module):
  def __init__(self, enc_dim: int, pred_dim: int, joint_dim: int, vocab: int, *, rngs: nnx.Rngs):
    self.enc_proj = Dense(enc_dim, joint_dim, rngs=rngs)
    self.pred_proj = Dense(pred_dim, joint_dim, use_bias=False, rngs=rngs)
    self.out = Dense(joint_dim, vocab, input_bound=1.0, rngs=rngs)   # reads tanh(enc + pred)
    self.joint_dim, self.vocab = joint_dim, vocab

  def project_encoder(self, frames: jax.Array) -> jax.Array:
    """`[..., enc_dim]` -> `[..., joint_dim]` (once per frame, outside the T x U grid)."""
    return self.enc_proj(frames)

  def project_prediction(self, pred: jax.Array) -> jax.Array:
    """`[..., pred_dim]` -> `[..., joint_dim]` (once per label)."""
    return self.pred_proj(pred)

  def __call__(self, enc: jax.Array, pred: jax.Array) -> jax.Array:
    """Projected `enc [B, T, J]`, `pred [B, U+1, J]` -> logits `[B, T, U+1, V]`."""
    return self.out(jnp.tanh(enc[:, :, None, :] + pred[:, None, :, :]))

  def single(self, enc: jax.Array, pred: jax.Array) -> jax.Array:
    """Projected `enc [..., J]`, `pred [..., J]` -> logits `[..., V]` (decoding)."""
    return self.out(jnp.tanh(enc + pred))

  def flops_per_frame(self) -> int:
    """Projecting one encoder frame."""
    return 2 * self.enc_proj.macs()

  def flops_per_label(self) -> int:
    """Projecting one prediction-network output."""
    return 2 * self.pred_proj.macs()

  def flops_per_evaluation(self) -> int:
    """One output distribution from projected inputs (the tanh is O(joint_dim))."""
    return 2 * self.out.macs()
