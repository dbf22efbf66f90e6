"""The RNN-T model: encoder + prediction network + joint, and its training losses."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax
from flax import nnx

from asr.losses import rnnt_loss_lean
from asr.models.encoder import EncoderOutput, LSTMEncoder
from asr.models.joint import Joint
from asr.models.prediction import LSTMPredictor, StatelessPredictor


@dataclasses.dataclass(frozen=True)
class TransducerConfig:
  vocab: int = 29
  num_mels: int = 80
  stack: int = 3
  enc_hidden: int = 256
  enc_layers: int = 2
  enc_layer_norm: bool = False
  predictor: str = "lstm"        # or "stateless"
  pred_embed: int = 128
  pred_hidden: int = 256
  stateless_context: int = 2
  joint_dim: int = 256
  enc_reduce: int = 1             # time reduction inside the encoder (2: 30 ms -> 60 ms frames)
  enc_reduce_after: int = 1       # ... after this many LSTM layers
  ctc_weight: float = 0.0         # auxiliary CTC on the encoder: faster alignment learning
  loss_chunk: int = 16            # frames per joint chunk in the lean loss


class Transducer(nnx.Module):
  def __init__(self, cfg: TransducerConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.encoder = LSTMEncoder(cfg.num_mels, cfg.enc_hidden, cfg.enc_layers, cfg.stack,
                               cfg.enc_layer_norm, cfg.enc_reduce, cfg.enc_reduce_after,
                               rngs=rngs)
    if cfg.predictor == "lstm":
      self.predictor = LSTMPredictor(cfg.vocab, cfg.pred_embed, cfg.pred_hidden, rngs=rngs)
    elif cfg.predictor == "stateless":
      self.predictor = StatelessPredictor(cfg.vocab, cfg.pred_embed, cfg.pred_hidden,
                                          cfg.stateless_context, rngs=rngs)
    else:
      raise ValueError(f"unknown predictor {cfg.predictor!r}: 'lstm' or 'stateless'")
    self.joint = Joint(self.encoder.out_dim, self.predictor.out_dim, cfg.joint_dim, cfg.vocab,
                       rngs=rngs)
    self.ctc_head = (nnx.Linear(self.encoder.out_dim, cfg.vocab, rngs=rngs)
                     if cfg.ctc_weight > 0 else None)

  def encode(self, features, lengths, *, train: bool = False) -> EncoderOutput:
    return self.encoder(features, lengths, train=train)

  def losses(self, features, feature_lengths, labels, label_lengths, *, train: bool = False) -> dict:
    """Per-utterance `rnnt` (and `ctc`) negative log-likelihoods `[B]`, and `flops [B, T']`."""
    enc = self.encode(features, feature_lengths, train=train)
    enc_p = self.joint.project_encoder(enc.frames)
    pred_p = self.joint.project_prediction(self.predictor(labels))
    rnnt = rnnt_loss_lean(enc_p, pred_p, lambda e, p: self.joint(e, p), labels, enc.lengths,
                          label_lengths, chunk=self.cfg.loss_chunk)
    out = {"rnnt": rnnt, "flops": enc.flops, "frame_lengths": enc.lengths}
    if self.ctc_head is not None:
      # Below a time reduction, where there are enough frames for every character.
      frames = enc.aux.get("pre_reduction", enc.frames)
      frame_lengths = enc.aux.get("pre_reduction_lengths", enc.lengths)
      logits = self.ctc_head(frames)
      t = logits.shape[1]
      frame_pad = (jnp.arange(t)[None] >= frame_lengths[:, None]).astype(jnp.float32)
      label_pad = (jnp.arange(labels.shape[1])[None] >= label_lengths[:, None]).astype(jnp.float32)
      out["ctc"] = optax.ctc_loss(logits, frame_pad, labels, label_pad, blank_id=0)
    return out
