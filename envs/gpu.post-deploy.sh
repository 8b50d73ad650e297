#!/usr/bin/env bash
# Snakemake runs this inside the freshly built conda env of envs/gpu.yaml (`--sdm conda`), from the working
# directory of the workflow. It installs this package WITHOUT its dependencies: pyproject.toml pins the CPU stack
# (torch 2.13, transformers 5.10), which would replace verl 0.9.1's own pins (torch 2.11, transformers 5.9).
# NOT RUN ANYWHERE YET (no conda and no GPU where it was written).
set -euo pipefail
pip install --no-deps -e "${RLRT_ROOT:-$PWD}"
python -c "import verl, rlrt.backends.verl.trainer"
