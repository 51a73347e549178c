#!/usr/bin/env bash
# Sets up a fresh machine for ptcore: torch, the Python dependencies, and the native build.
# CUDA kernels are compiled when a CUDA toolkit is found (FORCE_CUDA=1 makes that required,
# PTCORE_CUDA=0 skips them).
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export MAX_JOBS="${MAX_JOBS:-2}"
python -m pip install -q torch==2.14.1 torchvision==0.29.1
python -m pip install -q numpy scikit-learn tqdm matplotlib pyyaml pytest hypothesis pytest-benchmark \
    safetensors timm tensorboard setuptools wheel ninja
# ptcore itself, with the hf extra (transformers, datasets, accelerate, tokenizers) whose
# tests would otherwise skip
python -m pip install -q --no-build-isolation -e '.[hf]'
# TRL: the tests compare ptcore's LM loss with TRL's GKD loss (tests/integrations/test_hf_trl.py)
python -m pip install -q 'trl>=1.16'
python -m ptcore info
