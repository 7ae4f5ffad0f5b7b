#!/usr/bin/env bash
# The transcribe benchmark on a GPU machine: batched faster-whisper (float16) through `seerec transcribe`
# against faster-whisper's own BatchedInferencePipeline loop over the same files (not run in CI; see BENCHMARKS.md).
#   bash benchmarks/gpu_transcribe.sh [MODEL] [THREADS]
# Needs: an NVIDIA GPU with CUDA 12 and cuDNN 9 (CTranslate2's), `pip install -e '.[audio]'`, the MicroLens
# sample videos in ../shared/data, and MODEL (default large-v3) in the Hugging Face cache, reachable, or given
# as local-dir:<converted folder>.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-large-v3}"
threads="${2:-4}"
python -c "import ctranslate2; assert ctranslate2.get_cuda_device_count(), 'CTranslate2 sees no CUDA GPU'"
python benchmarks/bench_transcribe.py --model "$model" --device cuda --compute-type float16 --batched \
  --chunks-per-batch 16 --threads "$threads" --clip-seconds 10 --hop 0.4 \
  --out "benchmarks/results/transcribe-gpu-${model##*/}.json"
