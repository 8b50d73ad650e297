#!/usr/bin/env bash
# Steps 2 and 3 of the GPU environment (the header of envs/gpu.yaml says why there are three), run after step 1
# (envs/gpu.yaml's `pip:` list: torch and flash-attn's build tools) in the same Python environment:
#   * Snakemake runs it inside the freshly built conda env of envs/gpu.yaml (`--sdm conda`), from the workflow's
#     working directory (a copy of this script, so the repository is found by RLRT_ROOT or the working directory);
#   * envs/gpu.def runs it in the image's venv (RLRT_EDITABLE=0: the package is copied in, not linked);
#   * by hand: `conda activate rlrt-gpu && bash envs/gpu.post-deploy.sh`.
# The requirements come from envs/gpu.yaml's `#@step2` / `#@step3` lines (envs/gpu_requirements.py), never from here.
# Site settings: RLRT_FLASH_ATTN_WHEEL=/path/to/flash_attn-2.8.3+...whl installs a wheel built once for the site
# instead of compiling flash-attn here (a CUDA 13 nvcc on PATH or CUDA_HOME, and MAX_JOBS, when it compiles).
# NOT RUN ANYWHERE YET with real installs (no conda, CUDA or GPU where it was written; `make gpu-env-check` resolves
# the same requirement set without installing, tests/test_gpu_env.py runs this script with a recording pip).
set -euo pipefail
ROOT="${RLRT_ROOT:-$PWD}"
REQS=(python "$ROOT/envs/gpu_requirements.py")
ENV_FILE="$ROOT/envs/gpu.yaml"
test -f "$ENV_FILE" || { echo "gpu.post-deploy.sh: $ENV_FILE not found: run from the repository root or set RLRT_ROOT" >&2; exit 1; }
python -c "import torch" || { echo "gpu.post-deploy.sh: torch is not installed: step 1 (envs/gpu.yaml's pip: list) first" >&2; exit 1; }
export MAX_JOBS="${MAX_JOBS:-8}"

# Step 2: one pip call per line, each against the torch installed by step 1 (--no-build-isolation on the line).
while read -r req opts; do
    [ -n "$req" ] || continue
    name="${req%%[=<>!~ []*}"
    if [ "$name" = "flash-attn" ] && [ -n "${RLRT_FLASH_ATTN_WHEEL:-}" ]; then
        echo "gpu.post-deploy.sh: flash-attn from the site's wheel $RLRT_FLASH_ATTN_WHEEL"
        pip install "$RLRT_FLASH_ATTN_WHEEL" "$req"     # one call: a wheel of another version is a conflict
    else
        # shellcheck disable=SC2086  # opts are pip options, one word each
        pip install $opts "$req"
    fi
done < <("${REQS[@]}" step2 "$ENV_FILE")

# Step 3: one pip call with step 1's pins and the step-3 lines (the set `make gpu-env-check` resolves).
mapfile -t step3 < <("${REQS[@]}" step1 "$ENV_FILE"; "${REQS[@]}" step3 "$ENV_FILE")
pip install "${step3[@]}"

# This package WITHOUT its dependencies: pyproject.toml pins the CPU stack (torch 2.13, transformers 5.10), which
# would replace verl 0.9.1's own pins (torch 2.11, transformers 5.9).
if [ "${RLRT_EDITABLE:-1}" = "1" ]; then
    pip install --no-deps -e "$ROOT"
else
    pip install --no-deps "$ROOT"
fi
# fail the deployment, not the first cluster job, when an import or the verl plugin entry point is broken
python -c "import verl, vllm, flash_attn, rlrt, rlrt.backends.verl.overrides, rlrt.backends.verl.trainer, rlrt.backends.verl.evaluate, math_verify, mlflow"
