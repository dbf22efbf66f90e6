"""Helper run by `rnnt_loss_vs_torchaudio.py` inside the torch environment (not our venv).

  python _torchaudio_rnnt.py inputs.npz repeats [cpu|cuda]  ->  JSON {shape: {"ms": ..., "loss": [...]}}
Times `torchaudio.functional.rnnt_loss` forward + backward (best of `repeats`) on the CPU (2
threads) or on the GPU (torchaudio's CUDA kernel; timed to `torch.cuda.synchronize`).
"""

import json
import sys
import time

import numpy as np
import torch
import torchaudio

data = np.load(sys.argv[1])
repeats = int(sys.argv[2])
device = torch.device(sys.argv[3] if len(sys.argv) > 3 else "cpu")
if device.type == "cpu":
  torch.set_num_threads(2)
sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
out = {}
for name in sorted({k.split("/")[0] for k in data.files}):
  logits = torch.tensor(data[f"{name}/logits"], device=device, requires_grad=True)
  labels, t_len, u_len = (torch.tensor(data[f"{name}/{k}"], dtype=torch.int32, device=device)
                          for k in ("labels", "t_len", "u_len"))

  def run():
    logits.grad = None
    loss = torchaudio.functional.rnnt_loss(logits, labels, t_len, u_len, blank=0,
                                           reduction="none")
    loss.sum().backward()
    sync()
    return loss
  loss = run()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - start)
  out[name] = {"ms": best * 1000, "loss": loss.detach().cpu().numpy().tolist(),
               "torch": torch.__version__, "torchaudio": torchaudio.__version__}
print(json.dumps(out))
