"""Helper run by `train_step_vs_torch.py` inside the torch environment (not our venv): the
training step of a recipe written the way a PyTorch user would write it.

  python _torch_train_step.py spec.json  ->  JSON {"ms": [...], "params": N, "torch": version}

`spec.json` holds the recipe's sizes (`kind`: "lstm" or "transformer"), the batch (`batch`,
`samples`, `labels`, `frames`: the feature frames our front end gives that audio) and
`repeats`. The step: torchaudio log-mels (25 ms windows every 10 ms, 80 bins, per-utterance
normalization), the encoder, the stateless prediction network and the joint on the full
`[B, T, U+1, V]` lattice, `torchaudio.functional.rnnt_loss` plus CTC on the encoder (below the
time reduction for the LSTM, as ours), backward, gradient clipping at 5, AdamW. Two threads
(this project's reference machine has two cores). Timed as ours: the best of `repeats` steps
after two warm-up steps.
"""

import json
import math
import sys
import time

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn


class LSTMEncoder(nn.Module):
  """Stacked frames, LSTM layers with LayerNorm, a time reduction after layer `reduce_after`."""

  def __init__(self, s):
    super().__init__()
    self.stack, self.reduce, self.reduce_after = s["stack"], s["reduce"], s["reduce_after"]
    dims = [s["mels"] * s["stack"]] + [s["hidden"] * (s["reduce"] if i == s["reduce_after"]
                                                      else 1) for i in range(1, s["layers"])]
    self.lstms = nn.ModuleList(nn.LSTM(d, s["hidden"], batch_first=True) for d in dims)
    self.norms = nn.ModuleList(nn.LayerNorm(s["hidden"]) for _ in dims)
    self.out_dim = s["hidden"]

  @staticmethod
  def _join(x, factor):
    b, t, d = x.shape
    x = F.pad(x, (0, 0, 0, -t % factor))
    return x.reshape(b, -1, d * factor)

  def forward(self, x):
    """`[B, T, mels]` -> (`[B, T', H]`, the frames CTC reads `[B, T'', H]`)."""
    x = self._join(x, self.stack)
    below = None
    for i, (lstm, norm) in enumerate(zip(self.lstms, self.norms)):
      if i and i == self.reduce_after:
        below = x
        x = self._join(x, self.reduce)
      x = norm(lstm(x)[0])
    return x, below if below is not None else x


def rotary(x, positions):
  """RoFormer's rotation of `x [B, H, T, D]` by `positions [T]`."""
  half = x.shape[-1] // 2
  freqs = 10000.0 ** (-torch.arange(half, dtype=torch.float32) / half)
  angle = positions[:, None].float() * freqs
  cos, sin = angle.cos(), angle.sin()
  a, b = x[..., :half], x[..., half:]
  return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)


class Block(nn.Module):
  """Pre-LayerNorm self-attention (rotary, chunk-wise mask) and feed-forward (SiLU)."""

  def __init__(self, dim, heads, mult):
    super().__init__()
    self.heads = heads
    self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
    self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
    self.up, self.down = nn.Linear(dim, mult * dim), nn.Linear(mult * dim, dim)

  def forward(self, x, mask):
    b, t, d = x.shape
    q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
    pos = torch.arange(t)
    a = F.scaled_dot_product_attention(rotary(q, pos), rotary(k, pos), v, attn_mask=mask)
    x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
    return x + self.down(F.silu(self.up(self.norm2(x))))


class TransformerEncoder(nn.Module):
  """Causal strided convolutions (SiLU) to 40 ms frames, blocks, a final LayerNorm."""

  def __init__(self, s):
    super().__init__()
    dim, self.kernel = s["dim"], s["subsample_kernel"]
    self.strides = s["subsample"]
    ins = [s["mels"]] + [dim] * (len(self.strides) - 1)
    self.convs = nn.ModuleList(nn.Conv1d(i, dim, self.kernel, stride)
                               for i, stride in zip(ins, self.strides))
    self.blocks = nn.ModuleList(Block(dim, s["heads"], s["ffn_mult"]) for _ in range(s["layers"]))
    self.norm = nn.LayerNorm(dim)
    self.chunk, self.left = s["chunk"], s["left_chunks"]
    self.out_dim = dim

  def forward(self, x):
    x = x.transpose(1, 2)
    for conv, stride in zip(self.convs, self.strides):
      x = F.pad(x, (self.kernel - stride, -x.shape[-1] % stride))   # causal, whole strides
      x = F.silu(conv(x))
    x = x.transpose(1, 2)
    t = x.shape[1]
    c = torch.arange(t) // self.chunk
    mask = (c[None] <= c[:, None]) & (c[None] >= c[:, None] - self.left)
    for block in self.blocks:
      x = block(x, mask)
    x = self.norm(x)
    return x, x


class Transducer(nn.Module):
  def __init__(self, s):
    super().__init__()
    self.encoder = LSTMEncoder(s) if s["kind"] == "lstm" else TransformerEncoder(s)
    self.context = s["context"]
    self.embed = nn.Embedding(s["vocab"], s["pred_embed"])
    self.pred = nn.Linear(s["pred_embed"] * s["context"], s["pred_hidden"])
    self.enc_proj = nn.Linear(self.encoder.out_dim, s["joint_dim"])
    self.pred_proj = nn.Linear(s["pred_hidden"], s["joint_dim"], bias=False)
    self.joint_out = nn.Linear(s["joint_dim"], s["vocab"])
    self.ctc_head = nn.Linear(self.encoder.out_dim, s["vocab"])

  def forward(self, feats, labels):
    enc, below = self.encoder(feats)
    padded = F.pad(labels, (self.context, 0))                      # [B, context + U]
    history = padded.unfold(1, self.context, 1)                    # [B, U + 1, context]
    g = torch.tanh(self.pred(self.embed(history).flatten(2)))
    logits = self.joint_out(torch.tanh(self.enc_proj(enc)[:, :, None]
                                       + self.pred_proj(g)[:, None]))
    return logits, self.ctc_head(below).log_softmax(-1)


def main():
  spec = json.load(open(sys.argv[1]))
  torch.set_num_threads(2)
  torch.manual_seed(0)
  model = Transducer(spec)
  params = sum(p.numel() for p in model.parameters())
  opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=1e-4)
  mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=80,
                                             center=False)
  g = torch.Generator().manual_seed(0)
  b, u = spec["batch"], spec["labels"]
  audio = torch.randn(b, spec["samples"], generator=g) * 0.1
  labels = torch.randint(1, spec["vocab"], (b, u), generator=g, dtype=torch.int32)
  label_lengths = torch.full((b,), u, dtype=torch.int32)

  def step():
    feats = (mel(audio) + 1e-6).log().transpose(1, 2)[:, :spec["frames"]]   # [B, T, 80]
    feats = (feats - feats.mean(1, keepdim=True)) / (feats.std(1, keepdim=True) + 1e-5)
    logits, ctc_logp = model(feats, labels.long())
    frames = torch.full((b,), logits.shape[1], dtype=torch.int32)
    rnnt = torchaudio.functional.rnnt_loss(logits, labels, frames, label_lengths, blank=0,
                                           reduction="sum") / (b * u)
    ctc_frames = torch.full((b,), ctc_logp.shape[1], dtype=torch.int32)
    ctc = F.ctc_loss(ctc_logp.transpose(0, 1), labels, ctc_frames, label_lengths, blank=0,
                     reduction="sum") / (b * u)
    loss = rnnt + 0.5 * ctc
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    return float(loss)

  losses = [step(), step()]
  times = []
  for _ in range(spec["repeats"]):
    start = time.perf_counter()
    losses.append(step())
    times.append(time.perf_counter() - start)
  assert all(math.isfinite(x) for x in losses), losses
  print(json.dumps({"ms": [1000 * t for t in times], "params": params,
                    "torch": torch.__version__, "torchaudio": torchaudio.__version__}))


if __name__ == "__main__":
  main()
