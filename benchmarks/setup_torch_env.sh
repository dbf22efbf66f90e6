#!/usr/bin/env bash
# A separate environment with PyTorch 2.9.1 and torchaudio 2.9 for the loss benchmark only
# (the project itself never needs torch). About 7 GB on x86_64 (PyPI's torch carries CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
ENV=.venv-torch
test -x $ENV/bin/python || python3 -m venv $ENV
$ENV/bin/python -m pip install --quiet --upgrade pip
$ENV/bin/python -m pip install --quiet torch==2.9.1 'torchaudio==2.9.*' numpy
$ENV/bin/python -c "import torch, torchaudio; print('torch', torch.__version__, 'torchaudio', torchaudio.__version__)"
