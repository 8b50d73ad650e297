"""The GPU environment (envs/gpu.yaml, envs/gpu.def, envs/gpu.post-deploy.sh) and `make gpu-env-check`.

The defect these guard against: verl[vllm,fsdp]==0.9.1 pins flash-attn==2.8.3, a source-only package on PyPI whose
setup.py imports torch, so a one-step pip install fails under build isolation. The fast tests check the install order
the files encode, the check's parsing and classification on fake pip output; the network tests run the real check
against PyPI (skipped when it cannot be reached, failed instead under CI).
"""
from __future__ import annotations

import importlib.metadata as md
import json
import os
import stat
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "envs"))
import check_gpu_env as chk  # noqa: E402
import gpu_requirements as gr  # noqa: E402

GPU_YAML = ROOT / "envs" / "gpu.yaml"

# envs/gpu.yaml as it was before the fix: verl[vllm,fsdp] in the one conda pip list.
OLD_GPU_YAML = textwrap.dedent("""\
    name: rlrt-gpu
    channels:
      - conda-forge
    dependencies:
      - python=3.12
      - pip
      - pip:
          - verl[vllm,fsdp]==0.9.1
          - math-verify==0.9.0        # rlrt.tasks.grading
          - mlflow==3.17.2
    """)


def _write(tmp_path: Path, text: str, name: str = "gpu.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _spec(tmp_path, text=None):
    return chk.load_spec(_write(tmp_path, text) if text is not None else GPU_YAML)


# ------------------------------------------------------------------------------------------- the env files' order
def test_gpu_yaml_installs_torch_then_flash_attn_without_isolation_then_verl():
    env = gr.read(GPU_YAML)
    assert env.step1[0] == "torch==2.11.0"
    assert {"setuptools", "wheel", "packaging", "ninja", "psutil"} <= {Requirement(r).name for r in env.step1}
    assert env.step2 == [("flash-attn==2.8.3", ["--no-build-isolation"])]
    assert "verl[vllm,fsdp]==0.9.1" in env.step3
    # verl (whose fsdp extra needs flash-attn) is never in conda's one pip call, and flash-attn only in step 2
    assert not any(Requirement(r).name in ("verl", "flash-attn") for r in env.step1)
    assert not any(Requirement(r).name == "flash-attn" for r in env.step3)
    spec = chk.load_spec(GPU_YAML)          # the YAML parser reads the same pip list
    assert spec.built_on_node == {"flash-attn": Version("2.8.3")}


def _verl_requires(extra: str) -> list[Requirement]:
    out = []
    for r in md.requires("verl") or []:
        req = Requirement(r)
        if req.marker is not None and req.marker.evaluate({"extra": extra}) and "extra" in str(req.marker):
            out.append(req)
    return out


def _pin(reqs, name):
    return next(str(s.version) for r in reqs if r.name == name for s in r.specifier if s.operator == "==")


def test_pins_match_installed_verl_0_9_1_metadata():
    """torch and flash-attn as verl 0.9.1's own METADATA pins them (the venv has verl 0.9.1 from the test extra)."""
    assert md.version("verl") == "0.9.1"
    env = gr.read(GPU_YAML)
    vllm_extra, fsdp_extra = _verl_requires("vllm"), _verl_requires("fsdp")
    fa_extra = _verl_requires("flash-attn-cu130torch211")
    assert "verl[flash-attn-cu130torch211]" in {str(r).split(";")[0].strip() for r in fsdp_extra}
    step1 = {Requirement(r).name: r for r in env.step1}
    assert step1["torch"] == f"torch=={_pin(vllm_extra, 'torch')}" == f"torch=={_pin(fsdp_extra, 'torch')}"
    assert env.step2[0][0] == f"flash-attn=={_pin(fa_extra, 'flash-attn')}"


def test_gpu_def_follows_the_same_order_and_leaves_hf_offline_to_the_host():
    text = (ROOT / "envs" / "gpu.def").read_text()
    sections = {}
    current = None
    for line in text.splitlines():
        if line.startswith("%"):
            current = line.split()[0]
            sections[current] = []
        elif current:
            sections[current].append(line.strip())
    env_lines = [l for l in sections["%environment"] if l and not l.startswith("#")]
    assert not any("HF_HUB_OFFLINE" in l for l in env_lines), env_lines
    assert any(l.startswith("envs ") for l in sections["%files"])
    post = [l for l in sections["%post"] if l and not l.startswith("#")]
    i_step1 = next(i for i, l in enumerate(post) if "gpu_requirements.py step1" in l)
    i_deploy = next(i for i, l in enumerate(post) if "gpu.post-deploy.sh" in l)
    assert i_step1 < i_deploy
    assert not any("verl" in l and "pip install" in l for l in post)   # verl only through the post-deploy script


def _stub_bin(tmp_path: Path) -> tuple[Path, Path]:
    """A `pip` that records its arguments, and a `python` that answers `-c` checks and runs scripts for real."""
    bin_dir, log = tmp_path / "bin", tmp_path / "pip.log"
    bin_dir.mkdir()
    (bin_dir / "pip").write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    (bin_dir / "python").write_text(f'#!/usr/bin/env bash\nif [ "$1" = "-c" ]; then exit 0; fi\n'
                                    f'exec {sys.executable} "$@"\n')
    for f in bin_dir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    return bin_dir, log


def _post_deploy(tmp_path, **env):
    bin_dir, log = _stub_bin(tmp_path)
    run_env = {k: v for k, v in os.environ.items() if k not in ("RLRT_FLASH_ATTN_WHEEL", "RLRT_EDITABLE")}
    run_env.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", RLRT_ROOT=str(ROOT), **env)
    proc = subprocess.run(["bash", str(ROOT / "envs" / "gpu.post-deploy.sh")], cwd=tmp_path, env=run_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return log.read_text().splitlines()


def test_post_deploy_builds_flash_attn_after_torch_then_installs_the_rest_in_one_call(tmp_path):
    env = gr.read(GPU_YAML)
    calls = _post_deploy(tmp_path)
    assert calls[0] == "install --no-build-isolation flash-attn==2.8.3"
    assert calls[1] == "install " + " ".join(env.step1 + env.step3)      # one pip call: step 1's pins + step 3
    assert calls[2] == f"install --no-deps -e {ROOT}"
    assert len(calls) == 3


def test_post_deploy_takes_a_site_wheel_and_a_copied_package(tmp_path):
    wheel = "/site/flash_attn-2.8.3+cu130torch2.11-cp312-cp312-linux_x86_64.whl"
    calls = _post_deploy(tmp_path, RLRT_FLASH_ATTN_WHEEL=wheel, RLRT_EDITABLE="0")
    assert calls[0] == f"install {wheel} flash-attn==2.8.3"     # one call: a wheel of another version conflicts
    assert calls[2] == f"install --no-deps {ROOT}"


# ------------------------------------------------------------------------------------------- parsing the env file
def test_parser_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(ValueError, match="one plain requirement"):
        gr.parse("dependencies:\n  - pip:\n      - --no-build-isolation\n")
    with pytest.raises(ValueError, match="no pip options"):
        gr.parse("dependencies:\n  - pip:\n      - torch==2.11.0\n#@step3 verl==0.9.1 --no-deps\n")
    with pytest.raises(ValueError, match="no `- pip:` list"):
        gr.parse("dependencies:\n  - python=3.12\n")
    with pytest.raises(chk.CheckError, match="pin it to one version"):
        _spec(tmp_path, "dependencies:\n  - pip:\n      - torch==2.11.0\n#@step2 flash-attn>=2 --no-build-isolation\n")
    with pytest.raises(chk.CheckError, match="BUILT_ON_NODE_REQUIRES"):
        _spec(tmp_path, "dependencies:\n  - pip:\n      - torch==2.11.0\n#@step2 apex==0.1 --no-build-isolation\n")


def test_old_gpu_yaml_declares_nothing_built_on_the_node(tmp_path):
    spec = _spec(tmp_path, OLD_GPU_YAML)
    assert spec.built_on_node == {}
    assert spec.requirements[0] == "verl[vllm,fsdp]==0.9.1"


# ------------------------------------------------------------------------------------------- pip's failures
FA_SDIST_ONLY = ["flash_attn-2.8.3.tar.gz", "flash_attn-2.8.3.post1.tar.gz", "flash_attn-2.8.2.tar.gz"]


def test_diagnose_names_a_source_only_package_and_the_fix():
    out = ("Collecting flash-attn==2.8.3 (from verl[fsdp]==0.9.1)\n"
           "ERROR: Could not find a version that satisfies the requirement flash-attn==2.8.3 (from versions: none)\n"
           "ERROR: No matching distribution found for flash-attn==2.8.3\n")
    msgs = chk.diagnose_failure(out, files_of=lambda name: FA_SDIST_ONLY)
    assert len(msgs) == 1
    assert "unbuildable package: flash-attn==2.8.3" in msgs[0]
    assert "only its source package" in msgs[0] and "--no-build-isolation" in msgs[0]


def test_diagnose_a_package_with_wheels_for_other_platforms_only():
    out = "ERROR: No matching distribution found for llguidance<1.8.0,>=1.7.0\n"
    files = ["llguidance-1.7.6-cp39-abi3-manylinux_2_31_x86_64.whl", "llguidance-1.7.6.tar.gz"]
    msgs = chk.diagnose_failure(out, files_of=lambda name: files)
    assert "llguidance" in msgs[0] and "other platforms" in msgs[0]


def test_diagnose_a_conflict():
    out = textwrap.dedent("""\
        ERROR: Cannot install verl[vllm]==0.9.1 and transformers==5.10.4 because these package versions have conflicting dependencies.

        The conflict is caused by:
            The user requested transformers==5.10.4
            verl[vllm] 0.9.1 depends on transformers==5.9.0; extra == "vllm"

        ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/...
        """)
    msgs = chk.diagnose_failure(out, files_of=lambda name: [])
    assert len(msgs) == 1 and msgs[0].startswith("conflicting requirements")
    assert "transformers==5.10.4" in msgs[0] and "transformers==5.9.0" in msgs[0]


def test_diagnose_never_passes_an_unknown_failure():
    msgs = chk.diagnose_failure("ERROR: something else broke\n", files_of=lambda name: [])
    assert msgs and "something else broke" in msgs[0]


# ------------------------------------------------------------------------------------------- the report
def _item(name, version, url):
    return {"metadata": {"name": name, "version": version}, "download_info": {"url": url}}


def _report(*extra):
    return {"install": [
        _item("torch", "2.11.0", "https://files/torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl"),
        _item("llguidance", "1.7.6", "https://files/llguidance-1.7.6-cp39-abi3-manylinux_2_31_x86_64.whl"),
        _item("einops", "0.8.2", "https://files/einops-0.8.2-py3-none-any.whl"),
        _item("numpy", "2.3.5",
              "https://files/numpy-2.3.5-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"),
        _item("flash-attn", "2.8.3", "file:///tmp/stand-ins/flash_attn-2.8.3-py3-none-any.whl"),
        *extra]}


def test_classify_a_good_report():
    spec = chk.load_spec(GPU_YAML)
    res, errors = chk.classify_report(_report(), spec, "/tmp/stand-ins")
    assert errors == []
    assert res.glibc == 31 and res.glibc_by == ["llguidance==1.7.6"]
    assert res.packages["torch"] == Version("2.11.0")


def test_classify_fails_on_an_unexpected_source_package():
    spec = chk.load_spec(GPU_YAML)
    _, errors = chk.classify_report(_report(_item("pylatexenc", "2.10", "https://files/pylatexenc-2.10.tar.gz")),
                                    spec, "/tmp/stand-ins")
    assert len(errors) == 1 and "unexpected package without a wheel: pylatexenc==2.10" in errors[0]


def test_classify_fails_on_a_stand_in_at_another_version_or_a_missing_one():
    spec = chk.load_spec(GPU_YAML)
    rep = _report()
    rep["install"][-1] = _item("flash-attn", "2.8.2", "file:///tmp/stand-ins/flash_attn-2.8.2-py3-none-any.whl")
    _, errors = chk.classify_report(rep, spec, "/tmp/stand-ins")
    assert any("resolved 2.8.2, envs/gpu.yaml builds 2.8.3" in e for e in errors)
    rep["install"][-1] = _item("flash-attn", "2.8.3", "https://files/flash_attn-2.8.3-cp312-cp312-linux_x86_64.whl")
    _, errors = chk.classify_report(rep, spec, "/tmp/stand-ins")
    assert any("not as the package envs/gpu.yaml builds on the node" in e for e in errors)
    rep["install"].pop()
    _, errors = chk.classify_report(rep, spec, "/tmp/stand-ins")
    assert any("flash-attn is built on the node but is not in the resolved set" in e for e in errors)


def test_built_on_node_packages_must_really_lack_a_wheel_and_have_an_sdist():
    spec = chk.load_spec(GPU_YAML)
    assert chk.check_built_on_node(spec, files_of=lambda n: FA_SDIST_ONLY) == []
    aarch64 = FA_SDIST_ONLY + ["flash_attn-2.8.3-cp312-cp312-manylinux_2_28_aarch64.whl"]
    assert chk.check_built_on_node(spec, files_of=lambda n: aarch64) == []
    x86 = FA_SDIST_ONLY + ["flash_attn-2.8.3-cp312-cp312-manylinux_2_28_x86_64.whl"]
    errors = chk.check_built_on_node(spec, files_of=lambda n: x86)
    assert len(errors) == 1 and "has a wheel for linux x86_64" in errors[0]
    errors = chk.check_built_on_node(spec, files_of=lambda n: ["flash_attn-2.8.2.tar.gz"])
    assert len(errors) == 1 and "no source package" in errors[0]


def test_wheel_glibc():
    assert chk.wheel_glibc("a-1-cp312-cp312-manylinux_2_28_x86_64.whl") == 28
    assert chk.wheel_glibc("a-1-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl") == 17
    assert chk.wheel_glibc("a-1-py3-none-any.whl") is None


def test_stand_in_wheel_is_read_by_pip(tmp_path):
    """pip itself (offline, from the folder only) accepts the stand-in at its pin with its requirements."""
    path = chk.write_stand_in(tmp_path, "flash-attn", Version("2.8.3"), ["torch", "einops"])
    with zipfile.ZipFile(path) as z:
        meta = z.read("flash_attn-2.8.3.dist-info/METADATA").decode()
    assert "Requires-Dist: torch" in meta and "Requires-Dist: einops" in meta
    report = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps",
                           "--no-index", "--find-links", str(tmp_path), "--report", str(report),
                           "flash-attn==2.8.3"], capture_output=True, text=True, env=chk.pip_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    item = json.loads(report.read_text())["install"][0]
    assert item["metadata"]["version"] == "2.8.3" and item["metadata"]["requires_dist"] == ["torch", "einops"]


# ------------------------------------------------------------------------------------------- coverage
PYPROJECT = {"project": {"dependencies": ["torch==2.13.0", "snakemake==9.27.1", "scipy==1.17.1",
                                          "mlflow==3.17.2"]}}


def _resolved(**kw):
    base = {"torch": "2.11.0", "scipy": "1.17.1", "mlflow": "3.17.2", "numpy": "2.3.5"}
    base.update(kw)
    return {k: Version(v) for k, v in base.items() if v}


def test_coverage_passes_and_notes_the_gpu_overrides():
    spec = chk.load_spec(GPU_YAML)
    errors, notes = chk.check_coverage(spec, _resolved(), PYPROJECT, {"numpy": {"src/rlrt/x.py"}},
                                       {"numpy": ["numpy"]})
    assert errors == []
    assert notes == ["torch 2.13.0 (CPU venv) -> 2.11.0 (GPU env, pinned by verl[vllm])"]


def test_coverage_fails_on_a_missing_dependency_a_split_pin_and_a_driver_import(tmp_path):
    spec = chk.load_spec(GPU_YAML)
    errors, _ = chk.check_coverage(spec, _resolved(scipy=None), PYPROJECT, {}, {})
    assert errors == ["pyproject.toml's scipy is not in the GPU environment: add `scipy==1.17.1` to envs/gpu.yaml "
                      "(#@step3)"]
    split = GPU_YAML.read_text().replace("#@step3 mlflow==3.17.2", "#@step3 mlflow==3.17.1")
    errors, _ = chk.check_coverage(_spec(tmp_path, split), _resolved(mlflow="3.17.1"), PYPROJECT, {}, {})
    assert any("mlflow: envs/gpu.yaml pins 3.17.1, pyproject.toml 3.17.2" in e for e in errors)
    errors, _ = chk.check_coverage(spec, _resolved(), PYPROJECT,
                                   {"snakemake": {"src/rlrt/a.py"}, "sklearn": {"src/rlrt/b.py"}},
                                   {"snakemake": ["snakemake"], "sklearn": ["scikit-learn"]})
    assert any("imports snakemake, which only the driver has" in e for e in errors)
    assert any("imports sklearn (scikit-learn), which the GPU environment lacks" in e for e in errors)
    # make run's driver (src/rlrt/driver.py) runs where snakemake is, never in a job: its import is fine
    errors, _ = chk.check_coverage(spec, _resolved(), PYPROJECT, {"snakemake": {"src/rlrt/driver.py"}},
                                   {"snakemake": ["snakemake"]})
    assert errors == []


def test_imported_modules_of_the_package():
    mods = chk.imported_modules(ROOT / "src" / "rlrt")
    assert {"torch", "verl", "vllm", "math_verify"} <= set(mods)
    assert "rlrt" not in mods and "os" not in mods


# ------------------------------------------------------------------------------------------- the real check
def _run_check(*args, timeout=600):
    """The check on ``args``; with none, the run conftest started at collection (overlapping other tests) if any."""
    from conftest import GPU_ENV_CHECK, background_result

    proc = None if args else background_result(GPU_ENV_CHECK, timeout)
    if proc is None:
        proc = subprocess.run([sys.executable, str(ROOT / "envs" / "check_gpu_env.py"), *args],
                              capture_output=True, text=True, timeout=timeout)
    if proc.returncode == 2:
        reason = f"gpu-env-check could not run here: {(proc.stdout + proc.stderr).strip()[-500:]}"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return proc


def test_check_catches_the_source_only_flash_attn(tmp_path):
    """The original defect, end to end against the index: flash-attn==2.8.3 as a plain pip line (a few seconds)."""
    f = _write(tmp_path, "dependencies:\n  - python=3.12\n  - pip:\n      - flash-attn==2.8.3\n")
    proc = _run_check("--file", str(f))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "unbuildable package: flash-attn==2.8.3: the index has only its source package" in proc.stderr


def test_check_catches_a_conflicting_pin(tmp_path):
    f = _write(tmp_path, "dependencies:\n  - pip:\n      - verl[vllm]==0.9.1\n      - transformers==5.10.4\n")
    proc = _run_check("--file", str(f))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "conflicting requirements" in proc.stderr and "transformers==5.9.0" in proc.stderr


def test_gpu_env_resolves():
    """`make gpu-env-check` itself: the full set of envs/gpu.yaml resolves (about 2 minutes against PyPI)."""
    proc = _run_check()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gpu-env-check passed" in proc.stdout
    assert "flash-attn==2.8.3" in proc.stdout and "torch==2.11.0" in proc.stdout
