#!/usr/bin/env bash
# The GPU checks of PPD (personalized images), on a CUDA machine, in a few minutes: Diffusion-DPO
# steps and sampling on the device in bfloat16 (float16 where the GPU lacks it) with tiny SD 1.5-
# and SDXL-style pipelines built in code (nothing is downloaded), float16 with loss scaling, and
# `persona ppd train|generate` on the device. CI never needs this: there the `gpu` tests skip
# themselves.
#
#   benchmarks/gpu_smoke_ppd.sh                          # from the repository root
#   benchmarks/gpu_smoke_ppd.sh --sd15 /models/sd15      # also 2 DPO steps + 1 image of SD 1.5
#   benchmarks/gpu_smoke_ppd.sh --sdxl /models/sdxl      # ... of SDXL (local diffusers folders)
#
# Other arguments go to pytest (e.g. -x, -k sdxl). The checks: tests/images/test_ppd_gpu.py
# (marker `gpu`); PERSONA_GPU_TEST_DEVICE=cpu runs them on the CPU to check the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --sd15) export PERSONA_PPD_SD15="$2"; shift 2 ;;
        --sdxl) export PERSONA_PPD_SDXL="$2"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
for var in PERSONA_PPD_SD15 PERSONA_PPD_SDXL; do
    if [[ -n "${!var:-}" && ! -f "${!var}/model_index.json" ]]; then
        echo "gpu_smoke_ppd: ${!var} is not a diffusers pipeline folder (no model_index.json)" >&2
        exit 2
    fi
done
python - <<'PY'
import torch

if not torch.cuda.is_available():
    raise SystemExit("gpu_smoke_ppd: no CUDA device visible to torch; nothing to check")
name = torch.cuda.get_device_name(0)
print(f"gpu_smoke_ppd: torch {torch.__version__} on {name}, bf16 {torch.cuda.is_bf16_supported()}")
PY
exec timeout 900 python -m pytest -q -s -m gpu -p no:cacheprovider tests/images/test_ppd_gpu.py "${args[@]}"
