"""The transducer joint: `logits = W_out tanh(W_e h_t + W_p g_u)`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class Joint(nnx.Module):
  def __init__(self, enc_dim: int, pred_dim: int, joint_dim: int, vocab: int, *, rngs: nnx.Rngs):
    self.enc_proj = nnx.Linear(enc_dim, joint_dim, rngs=rngs)
    self.pred_proj = nnx.Linear(pred_dim, joint_dim, use_bias=False, rngs=rngs)
    self.out = nnx.Linear(joint_dim, vocab, rngs=rngs)
    self.joint_dim, self.vocab = joint_dim, vocab

  def project_encoder(self, frames: jax.Array) -> jax.Array:
    """`[..., enc_dim]` -> `[..., joint_dim]` (once per frame, outside the T x U grid)."""
    return self.enc_proj(frames)

  def project_prediction(self, pred: jax.Array) -> jax.Array:
    return self.pred_proj(pred)

  def __call__(self, enc: jax.Array, pred: jax.Array) -> jax.Array:
    """Projected `enc [B, T, J]`, `pred [B, U+1, J]` -> logits `[B, T, U+1, V]`."""
    return self.out(jnp.tanh(enc[:, :, None, :] + pred[:, None, :, :]))

  def single(self, enc: jax.Array, pred: jax.Array) -> jax.Array:
    """Projected `enc [..., J]`, `pred [..., J]` -> logits `[..., V]` (decoding)."""
    return self.out(jnp.tanh(enc + pred))

  def macs_per_symbol_step(self) -> int:
    return self.joint_dim * self.vocab
