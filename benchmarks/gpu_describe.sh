#!/usr/bin/env bash
# The describe benchmark on a GPU machine with a real model and vLLM (not run in CI; see BENCHMARKS.md).
#   bash benchmarks/gpu_describe.sh [MODEL] [ITEMS]
# Needs: an NVIDIA GPU, `pip install -e '.[vllm]'`, and the model in the Hugging Face cache or reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-Qwen/Qwen2.5-VL-7B-Instruct}"
items="${2:-200}"
python -c "import torch, vllm; assert torch.cuda.is_available(), 'no CUDA GPU'"
python benchmarks/bench_describe.py --backend vllm --model "$model" --num-gpus 1 --items "$items" \
  --batch-size 32 --max-new-tokens 256 --out benchmarks/results/describe-gpu-vllm.json
python benchmarks/bench_describe.py --backend transformers --model "$model" --num-gpus 1 --items "$items" \
  --batch-size 8 --max-new-tokens 256 --out benchmarks/results/describe-gpu-transformers.json
