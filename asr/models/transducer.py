"""The RNN-T model: feature normalization, an encoder built by family name, a prediction
network, the joint and an optional CTC head.

`encode` and `score` are separate so several hypotheses (MWER) or a teacher's outputs
(distillation) reuse one encoder pass:

  encoded = model.encode(features, feature_lengths, ctx)   # ctx: asr.models.context.Context
  nll = model.score(encoded, labels, label_lengths, ctx)   # {"rnnt": [B] or [B, K], "ctc": ...}

The call context (training flag, key, schedule values, whether statistics update) reaches every
layer of the encoder; without one, a pass is inference.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from asr import features as F
from asr.arrays import length_mask
from asr.losses import rnnt_loss_lean
from asr.models import amnet, conformer, lstm_encoder  # noqa: F401  (register their families)
from asr.models.context import Context
from asr.models.dense import Dense, check_matmul_dtype, set_matmul_dtype
from asr.models.encoder import EncoderOutput, build_encoder
from asr.models.frontend import FeatureNormalizer
from asr.models.joint import Joint
from asr.models.prediction import LSTMPredictor, StatelessPredictor

PREDICTORS = ("lstm", "stateless")


@dataclasses.dataclass(frozen=True)
class TransducerConfig:
  vocab: int = 29
  num_mels: int = 80
  normalization: str = "causal"     # asr.models.frontend: causal, global or utterance
  norm_prior_frames: float = 100.0  # weight of the training statistics in causal normalization
  encoder: str = "lstm"             # a registered family (asr.models.encoder)
  encoder_config: object = lstm_encoder.LSTMEncoderConfig()  # that family's options
  predictor: str = "lstm"           # or "stateless"
  pred_embed: int = 128
  pred_hidden: int = 256
  stateless_context: int = 2
  joint_dim: int = 256
  ctc_head: bool = False            # an auxiliary CTC output on the encoder
  loss_chunk: int = 16              # frames per joint chunk in the lean RNN-T loss
  matmul_dtype: str = "float32"     # or "bfloat16": products only (asr.models.dense)

  @property
  def features(self) -> F.FeatureConfig:
    """The log-mel features the model takes: the one place the training step, evaluation,
    streaming and the int8 path get them from."""
    return F.FeatureConfig(num_mels=self.num_mels)


class Transducer(nnx.Module):
  def __init__(self, cfg: TransducerConfig, *, rngs: nnx.Rngs):
    if cfg.predictor not in PREDICTORS:
      raise ValueError(f"unknown predictor {cfg.predictor!r} (model.predictor): "
                       f"{' or '.join(PREDICTORS)}")
    check_matmul_dtype(cfg.matmul_dtype)
    self.cfg = cfg
    self.frontend = FeatureNormalizer(cfg.num_mels, cfg.normalization, cfg.norm_prior_frames)
    self.encoder = build_encoder(cfg.encoder, cfg.encoder_config, cfg.num_mels,
                                 input_frame_seconds=cfg.features.hop_seconds, rngs=rngs)
    if cfg.predictor == "lstm":
      self.predictor = LSTMPredictor(cfg.vocab, cfg.pred_embed, cfg.pred_hidden, rngs=rngs)
    else:
      self.predictor = StatelessPredictor(cfg.vocab, cfg.pred_embed, cfg.pred_hidden,
                                          cfg.stateless_context, rngs=rngs)
    self.joint = Joint(self.encoder.out_dim, self.predictor.out_dim, cfg.joint_dim, cfg.vocab,
                       rngs=rngs)
    self.ctc_head = Dense(self.encoder.out_dim, cfg.vocab, rngs=rngs) if cfg.ctc_head else None
    set_matmul_dtype(self, cfg.matmul_dtype)  # again after any surgery (training.loop.build_model)

  # ---- encode once ----

  def encode(self, features: jax.Array, lengths: jax.Array,
             ctx: Context | None = None) -> EncoderOutput:
    """Log-mel `features [B, T, F]`, `lengths [B]` -> the encoder's output (normalized here)."""
    ctx = ctx or Context()
    with ctx.updating():
      return self.encoder(self.frontend(features, lengths), lengths, ctx)

  # ---- score many ----

  def score(self, encoded: EncoderOutput, labels: jax.Array, label_lengths: jax.Array,
            ctx: Context | None = None) -> dict:
    """Negative log-likelihoods of label sequences given one encoder pass.

    `labels [B, U]` with `label_lengths [B]` -> `{"rnnt": [B]}`; or `K` hypotheses per
    utterance, `labels [B, K, U]` with `label_lengths [B, K]` -> `[B, K]`. With a CTC head,
    `"ctc"` alike (computed below a time reduction, where every character has a frame; 0 where
    the frames cannot hold the labels) and `"ctc_feasible"` (bool: where they can).
    """
    with (ctx or Context()).updating():
      return self._score(encoded, labels, label_lengths)

  def _score(self, encoded, labels, label_lengths):
    k = labels.shape[1] if labels.ndim == 3 else None
    flat_labels = labels.reshape(-1, labels.shape[-1])
    flat_lengths = label_lengths.reshape(-1)
    tile = (lambda x: x) if k is None else (lambda x: jnp.repeat(x, k, axis=0))
    enc_p = tile(self.joint.project_encoder(encoded.frames))
    with jax.named_scope("prediction"):
      pred_p = self.joint.project_prediction(self.predictor(flat_labels))
    with jax.named_scope("rnnt"):
      nll = {"rnnt": rnnt_loss_lean(enc_p, pred_p, lambda e, p: self.joint(e, p), flat_labels,
                                    tile(encoded.lengths), flat_lengths,
                                    chunk=self.cfg.loss_chunk)}
    if self.ctc_head is not None:
      frames = encoded.aux.get("pre_reduction", encoded.frames)
      frame_lengths = encoded.aux.get("pre_reduction_lengths", encoded.lengths)
      with jax.named_scope("ctc"):
        logits = tile(self.ctc_head(frames))
        frame_pad = (~length_mask(tile(frame_lengths), logits.shape[1])).astype(jnp.float32)
        label_pad = (~length_mask(flat_lengths, flat_labels.shape[1])).astype(jnp.float32)
        ctc = optax.ctc_loss(logits, frame_pad, flat_labels, label_pad, blank_id=0)
      # CTC needs a frame per label and one more between repeated labels; where the frames
      # cannot hold the labels its loss is "infinite" (optax: about 1e5) and would swamp the
      # batch. Such rows score 0 and are flagged (as PyTorch's `zero_infinity`), and counted.
      repeats = jnp.sum((flat_labels[:, 1:] == flat_labels[:, :-1])
                        & length_mask(flat_lengths - 1, flat_labels.shape[1] - 1), axis=1)
      feasible = tile(frame_lengths) >= flat_lengths + repeats
      nll["ctc"] = jnp.where(feasible, ctc, 0.0)
      nll["ctc_feasible"] = feasible
    return {name: v.reshape(labels.shape[:-1]) for name, v in nll.items()}

  # ---- compute ----

  def decoding_flops(self, frames: jax.Array, tokens: jax.Array) -> jax.Array:
    """FLOPs of the joint and the prediction network to decode `frames` output frames emitting
    `tokens` labels, greedily: every frame is projected and needs one output distribution that
    ends it (blank), and every emitted label advances the prediction network, is projected and
    needs one more distribution. (A frame that reaches the per-frame label cap ends without its
    blank distribution: at most one evaluation per such frame is overcounted.)"""
    j = self.joint
    per_frame = j.flops_per_frame() + j.flops_per_evaluation()
    per_token = self.predictor.flops_per_step() + j.flops_per_label() + j.flops_per_evaluation()
    return frames * float(per_frame) + tokens * float(per_token)

  # ---- streaming ----

  def init_stream(self, batch: int):
    """The state before any audio: (normalizer state, encoder state)."""
    return self.frontend.init_state(batch), self.encoder.init_state(batch)

  def stream_step(self, state, features: jax.Array, lengths: jax.Array
                  ) -> tuple[EncoderOutput, tuple]:
    """One chunk of log-mel `features [B, C, F]` (C a multiple of the encoder's frames per
    output frame, except an utterance's last) -> its encoder output and the new state."""
    norm_state, enc_state = state
    x, norm_state = self.frontend.step(norm_state, features, lengths)
    out, enc_state = self.encoder.step(enc_state, x, lengths)
    return out, (norm_state, enc_state)
