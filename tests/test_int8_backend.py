"""The int8 recognizer's accounting on a randomly pruned model: per-frame FLOPs equal the float
recognizer's (a Transformer's attention over the keys each frame sees), and the MACs it
executes equal a count by hand of the float model's non-zero weights."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asr.models import LSTMEncoderConfig, Transducer, TransducerConfig
from asr.models.conformer import ConformerConfig, TransformerConfig
from asr.models.dense import Dense
from asr.training.evaluate import make_recognizer
from hardware.int8_backend import int8_recognizer
from tests.helpers import randomize

CHUNK, LEFT = 2, 1


def _pruned_model(encoder, seed=0):
  """Every weight matrix (and a Conformer's depthwise kernel) half zeros, at random; the rest
  between a half and the whole of its channel's largest magnitude, so none rounds to zero in
  int8 and the non-zeros of the float model are the integer model's."""
  if encoder == "lstm":
    enc = LSTMEncoderConfig(hidden=16, layers=2, stack=2, layer_norm=True, reduce=2,
                            reduce_after=1)
  else:
    sizes = dict(dim=16, layers=2, heads=2, ffn_mult=2, chunk=CHUNK, left_chunks=LEFT,
                 dropout=0.0)
    enc = (ConformerConfig(conv_kernel=3, **sizes) if encoder == "conformer"
           else TransformerConfig(**sizes))
  cfg = TransducerConfig(vocab=6, num_mels=8, encoder=encoder, encoder_config=enc,
                         predictor="lstm" if encoder == "lstm" else "stateless", pred_embed=8,
                         pred_hidden=16, joint_dim=16)
  model = randomize(Transducer(cfg, rngs=nnx.Rngs(seed)), seed, scale=0.3)
  rng = np.random.default_rng(seed)
  kernels = [layer.kernel for _, layer in nnx.iter_graph(model) if isinstance(layer, Dense)]
  kernels += [u.depthwise for b in getattr(model.encoder, "blocks", ())
              for _, _, u in b.units() if hasattr(u, "depthwise")]
  for k in kernels:
    w = np.asarray(k[...])
    size = rng.uniform(0.5, 1.0, w.shape) * 0.3 * np.sign(w)
    k[...] = jnp.asarray(size * (rng.random(w.shape) < 0.5), jnp.float32)
  model.joint.out.kernel[...] = model.joint.out.kernel[...] * 8.0     # decisive: it emits
  return model


def _nnz(k) -> int:
  return int(np.count_nonzero(np.asarray(k[...])))


def _hand_count(model, encoder):
  """(encoder MACs per output frame on non-zero weights, MACs per key a frame sees, per
  decoded frame, per emitted label), from the float model's layers."""
  enc = model.encoder
  per_key = 0
  if model.cfg.encoder == "lstm":
    frame = sum((_nnz(layer.input.kernel) + _nnz(layer.recurrent.kernel))
                * (enc.reduce if i < enc.reduce_after else 1) for i, layer in enumerate(enc.layers))
  else:
    frame, per_output = 0, 1
    for layer in reversed(enc.subsampling):
      frame += _nnz(layer.proj.kernel) * per_output
      per_output *= layer.stride
    for b in enc.blocks:
      frame += _nnz(b.attention.qkv.kernel) + _nnz(b.attention.out.kernel)
      per_key += 2 * b.attention.dim
      ffns = [b.ffn1, b.ffn2] if encoder == "conformer" else [b.ffn]
      frame += sum(_nnz(f.up.kernel) + _nnz(f.down.kernel) for f in ffns)
      if encoder == "conformer":
        frame += (_nnz(b.conv.pointwise_in.kernel) + _nnz(b.conv.depthwise)
                  + _nnz(b.conv.pointwise_out.kernel))
  p, j = model.predictor, model.joint
  pred = (_nnz(p.lstm.input.kernel) + _nnz(p.lstm.recurrent.kernel) if model.cfg.predictor ==
          "lstm" else _nnz(p.proj.kernel))
  return frame, per_key, _nnz(j.enc_proj.kernel) + _nnz(j.out.kernel), \
      pred + _nnz(j.pred_proj.kernel) + _nnz(j.out.kernel)


def _keys_seen(n: int, frames: int) -> np.ndarray:
  """Keys frame t of an utterance of n valid frames attends to, one by one."""
  return np.array([sum(1 for j in range(n) if t // CHUNK - LEFT <= j // CHUNK <= t // CHUNK)
                   if t < n else 0 for t in range(frames)])


@pytest.mark.parametrize("encoder", ["lstm", "transformer", "conformer"])
def test_int8_recognizer_counts_the_float_flops_and_executes_the_non_zero_weights(encoder):
  model = _pruned_model(encoder)
  graphdef, *variables = nnx.split(model, nnx.Param, ...)
  variables = tuple(variables)
  rng = np.random.default_rng(1)
  audio = jnp.asarray(rng.normal(0, 3000, (3, 16000)).astype(np.int16))
  audio_lengths = jnp.asarray([16000, 9000, 2500])
  recognize = int8_recognizer(graphdef, variables, [{"audio": audio,
                                                     "audio_lengths": audio_lengths}],
                              max_symbols=3)
  out = recognize(variables, audio, audio_lengths)
  ref = make_recognizer(graphdef, "greedy", 4, 3)(variables, audio, audio_lengths)
  np.testing.assert_array_equal(out["frame_lengths"], np.asarray(ref["frame_lengths"]))
  width = ref["flops"].shape[1]     # the integer encoder runs whole chunks: padding, no cost
  np.testing.assert_array_equal(out["flops"][:, :width], np.asarray(ref["flops"]))
  assert not out["flops"][:, width:].any()
  # Executed MACs: the encoder's non-zeros (and attention over the keys seen), the joint's on
  # every frame, the prediction network's and joint's again for each label emitted there.
  frame, per_key, decode, token = _hand_count(model, encoder)
  n, frames = out["frame_lengths"], out["flops"].shape[1]
  keys = np.stack([_keys_seen(int(k), frames) for k in n])
  valid = np.arange(frames)[None] < n[:, None]
  extra = out["frame_macs_executed"] - valid * (frame + per_key * keys + decode)
  labels = extra / token
  np.testing.assert_array_equal(labels, np.round(labels))
  assert (labels >= 0).all() and not labels[~valid].any()
  np.testing.assert_array_equal(labels.sum(1), out["lengths"])
  assert out["lengths"].sum() > 5                       # labels were emitted and counted
  if encoder != "lstm":
    assert len(set(keys[valid].tolist())) > 1           # frames see different numbers of keys
