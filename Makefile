# Two commands on a fresh machine: `make run` (the embedded default DAG) and `make test` (the test suite).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
CONFIG ?= config/config.yaml
SNAKEMAKE_ARGS ?=

.PHONY: run test setup dryrun paper-dryrun report publish pull bench gpu-smoke clean

# Rules call `python` from PATH (the job's environment, e.g. the conda env under `--sdm conda`): the venv's first.
run dryrun paper-dryrun report publish pull test bench: export PATH := $(abspath $(BIN)):$(PATH)

# torch first, pinned to the CPU build served here; then the package with its pinned deps.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(BIN)/.installed

# `python -m rlrt.config` first: a missing or broken --configfile is one line naming it, not Snakemake's traceback.
run: setup
	$(BIN)/python -m rlrt.config $(CONFIG)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) $(SNAKEMAKE_ARGS)

dryrun: setup
	$(BIN)/python -m rlrt.config $(CONFIG)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) -n

# The paper-scale plan through the SLURM profile: every job with the GPUs, memory and time it would ask for
# (nothing is submitted; the test extra installs verl here, so the backend check passes without --sdm).
paper-dryrun: setup
	$(BIN)/snakemake --configfile config/paper.yaml --profile workflow/profiles/slurm -n

# Snakemake's self-contained HTML report of the finished run (figures, tables, runtimes, provenance).
report: setup
	$(BIN)/snakemake --cores 1 --configfile $(CONFIG) --report results/report.html

# Version a finished run with DVC (src/rlrt/publish.py): `dvc add` the DAG's leaves (tables, figures, metrics, plot
# files, analyses) and dvc.yaml's artifacts (final checkpoints), then `dvc push` to the default remote (.dvc/config:
# .dvc-store/ beside this file; `dvc remote add -d name s3://... | ssh://...` for a team). Commit the .dvc files.
publish: setup
	$(BIN)/python -m rlrt.publish publish --configfile $(CONFIG)

# In a fresh clone: bring a published run back (artifacts first, then the leaves); `make run` then has nothing to do.
pull: setup
	$(BIN)/python -m rlrt.publish pull --configfile $(CONFIG)

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/bench_pipeline.py

clean:
	rm -rf results .snakemake

# GPU smoke test of the paper-scale backend (2 verl RLRT steps + a vLLM evaluation) on one GPU, run inside the GPU
# environment (envs/gpu.yaml or envs/gpu.def), not the CPU venv: RLRT_SMOKE_MODEL=/path/to/Qwen3-0.6B make gpu-smoke
gpu-smoke:
	python bench/gpu_smoke.py $(if $(METHOD),--method $(METHOD))
