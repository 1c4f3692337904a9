#!/usr/bin/env bash
# One prepared GPU run of benchmarks/train_step.py at the paper's full sizes (Sec. 4.3.1): the ViQ-16k tokenizer (1.1B
# trunk) with Qwen2.5-0.5B and -7B, packed 4k and 16k sequences, images up to 768x768, bf16, the LLM fully fine-tuned
# with AdamW, decoder layers checkpointed; pixels through the frozen tokenizer vs precomputed codes, interleaved.
# Made for a device lease of about 10 minutes (one H200: the 7B at 16k needs ~65 GiB of weights, gradients and AdamW
# states plus activations). Every row is written to $OUT/train_step_cuda.json as soon as it is measured, and repeats
# stop at --budget-s, so a run cut short still returns what it measured.
#
#   OUT=outputs bash benchmarks/train_step_gpu.sh
#
# On the device image (torch 2.11, transformers 5.17, the package not installed): carry the `.whl` folder of the
# gpu_check.py section of benchmarks/README.md; the transformers wheel is installed into /tmp/site and `src` put on
# PYTHONPATH, as for the other GPU scripts. Where the package is installed (`make install`), nothing is changed.
#
# Dry run on a CPU (the plan and the full-size predictions; nothing is built but on the meta device):
#   python benchmarks/train_step.py --device cuda --dry-run
# and the same code path at a tiny size, checkpointing included:
#   python benchmarks/train_step.py --device cpu --scale 0.03 --depth-scale 0.25 --repeats 1 --gradient-checkpointing
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs}
mkdir -p "$OUT"
if ! python3 -c "import transformers_viq" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/transformers-*.whl
    export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONUNBUFFERED=1 python3 benchmarks/train_step.py --device cuda --llms 0.5b,7b --seq-lens 4096,16384 \
    --gradient-checkpointing --warmup 2 --repeats 5 --budget-s "${BUDGET_S:-420}" \
    --json "$OUT/train_step_cuda.json" 2> >(tee "$OUT/train_step_cuda.err" >&2) | tee "$OUT/train_step_cuda.txt"
