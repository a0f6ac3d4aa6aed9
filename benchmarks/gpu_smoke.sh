#!/usr/bin/env bash
# The GPU checks of the text generators, on a CUDA machine, in a few minutes (tiny LMs built in
# code; nothing is downloaded). CI never needs this: there the `gpu` tests skip themselves.
#
#   benchmarks/gpu_smoke.sh            # from the repository root, with persona_engine installed
#
# What runs (tests/generation/test_gen_gpu.py, marker `gpu`): decoding and sampling stay on the
# device and match the CPU; PAD's reward head trained by DPO on the GPU with the LM in bfloat16
# (where supported), then decoding with it, two generators concurrently on one shared model;
# Drift with a separate small LM on the GPU and on the CPU; `persona pad-train --device --dtype`.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
python - <<'PY'
import torch

if not torch.cuda.is_available():
    raise SystemExit("gpu_smoke: no CUDA device visible to torch; nothing to check")
name = torch.cuda.get_device_name(0)
print(f"gpu_smoke: torch {torch.__version__} on {name}, bf16 {torch.cuda.is_bf16_supported()}")
PY
exec timeout 900 python -m pytest -q -m gpu -p no:cacheprovider tests/generation/test_gen_gpu.py "$@"
