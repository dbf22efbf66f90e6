"""Helper run by `rnnt_loss_vs_torchaudio.py` inside the torch environment (not our venv).

  python _torchaudio_rnnt.py inputs.npz repeats  ->  JSON {shape: {"ms": ..., "loss": [...]}}
Times `torchaudio.functional.rnnt_loss` forward + backward on the CPU (best of `repeats`).
"""

import json
import sys
import time

import numpy as np
import torch
import torchaudio

torch.set_num_threads(2)
data = np.load(sys.argv[1])
repeats = int(sys.argv[2])
out = {}
for name in sorted({k.split("/")[0] for k in data.files}):
  logits = torch.tensor(data[f"{name}/logits"], requires_grad=True)
  labels = torch.tensor(data[f"{name}/labels"], dtype=torch.int32)
  t_len = torch.tensor(data[f"{name}/t_len"], dtype=torch.int32)
  u_len = torch.tensor(data[f"{name}/u_len"], dtype=torch.int32)

  def run():
    logits.grad = None
    loss = torchaudio.functional.rnnt_loss(logits, labels, t_len, u_len, blank=0,
                                           reduction="none")
    loss.sum().backward()
    return loss
  loss = run()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - start)
  out[name] = {"ms": best * 1000, "loss": loss.detach().numpy().tolist(),
               "torch": torch.__version__, "torchaudio": torchaudio.__version__}
print(json.dumps(out))
