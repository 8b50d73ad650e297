"""`make gpu-env-check`: resolve the GPU environment (envs/gpu.yaml) with pip's resolver, without installing.

What it checks, for linux x86_64 / CPython 3.12 (the platform envs/gpu.yaml and envs/gpu.def target):

1. The FULL requirement set of envs/gpu.yaml (its `pip:` list and its `#@step2` / `#@step3` lines, read by
   envs/gpu_requirements.py: the file itself is the only list) resolves with no conflict and with a WHEEL for every
   package (`pip install --dry-run --report --ignore-installed --only-binary=:all: --platform ...`), except the
   packages envs/gpu.yaml builds on the GPU node: the `#@step2` lines with `--no-build-isolation` (flash-attn, whose
   setup.py imports torch and so cannot build under pip's build isolation). Those enter the resolution as
   metadata-only stand-in wheels at their pinned version, so a pin that disagrees with what verl requires is a
   conflict; and the index is asked that each of them really has no wheel for the platform and does have a source
   package at that version ("exactly these and no others are built on the node").
2. This package's runtime imports are covered: every dependency of pyproject.toml (but the driver-only ones) and
   every third-party module src/rlrt imports is in the resolved set; a pin of envs/gpu.yaml that pyproject.toml also
   pins is the same version (but torch and transformers, which verl[vllm] pins).

pip runs under a CPython 3.12 interpreter (`pip --python`): pip evaluates environment markers such as vLLM's
`setuptools<81; python_version > "3.11"` with the interpreter it runs under, whatever --python-version says.
Markers of the platform (sys_platform, platform_machine) are this machine's: run it on linux x86_64.
The index is the real PyPI (RLRT_PIP_INDEX_URL to change it), with pip's configuration files and PIP_* variables
other than network settings ignored, so a local find-links or constraint file of the machine does not enter.

Exit status 0: resolved; 1: a conflict, an unexpected package without a wheel, or a coverage gap (one message
each, naming the package and the line of envs/gpu.yaml to change); 2: the check could not run (no network, no 3.12).
"""
from __future__ import annotations

import argparse
import ast
import base64
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_requirements  # noqa: E402  (envs/gpu_requirements.py, standard library only)

ROOT = Path(__file__).resolve().parent.parent
INDEX_URL = os.environ.get("RLRT_PIP_INDEX_URL", "https://pypi.org/simple")
PYTHON = (3, 12)
GLIBC_MAX = 34      # wheels tagged up to manylinux_2_34 (RHEL 9); the run prints the glibc the chosen wheels need

# Runtime requirements of each package built on the GPU node (a stand-in wheel carries them into the resolution):
# from the source package's PKG-INFO (flash_attn-2.8.3.tar.gz: Requires-Dist torch, einops).
BUILT_ON_NODE_REQUIRES = {"flash-attn": ["torch", "einops"]}
# pyproject.toml dependencies the jobs never import: the driver runs them (snakemake; dvc for make publish / pull).
DRIVER_ONLY = {"snakemake": "the workflow driver, not the jobs", "dvc": "make publish / pull on the driver"}
# Modules of this package that only the driver runs (never a job), so their imports of DRIVER_ONLY packages are fine.
DRIVER_MODULES = {"src/rlrt/driver.py": "make run's wrapper that execs snakemake"}
# pyproject.toml pins that the GPU environment replaces with verl[vllm]==0.9.1's own pins.
GPU_OVERRIDES = {"torch", "transformers"}
# Modules src/rlrt imports whose distribution is not installed in the CPU venv (so not found by import name).
MODULE_DIST = {"vllm": "vllm", "flash_attn": "flash-attn"}
# pip environment variables that are network settings (kept); every other PIP_* variable is dropped.
PIP_NETWORK_VARS = {"PIP_CERT", "PIP_CLIENT_CERT", "PIP_PROXY", "PIP_DEFAULT_TIMEOUT", "PIP_TIMEOUT", "PIP_RETRIES",
                    "PIP_TRUSTED_HOST", "PIP_CACHE_DIR"}


class CheckError(Exception):
    """The check ran and the environment is broken (exit 1)."""


class CannotRun(Exception):
    """The check could not run here (exit 2)."""


def platforms(glibc_max: int = GLIBC_MAX) -> list[str]:
    # Oldest first: pip prefers the tags it is given first, so each chosen wheel is the one needing the oldest glibc
    # and the highest glibc among them is what the environment needs. (pip does not expand manylinux_2_X itself.)
    return ["manylinux2014_x86_64"] + [f"manylinux_2_{m}_x86_64" for m in range(17, glibc_max + 1)]


def compatible_tags(glibc_max: int = GLIBC_MAX) -> set[tuple[str, str, str]]:
    from packaging import tags
    plats = platforms(glibc_max) + ["manylinux2010_x86_64", "manylinux1_x86_64"]
    out = {(t.interpreter, t.abi, t.platform) for t in tags.cpython_tags(PYTHON, platforms=plats)}
    out |= {(t.interpreter, t.abi, t.platform) for t in tags.compatible_tags(PYTHON, "cp312", platforms=plats)}
    return out


def wheel_glibc(filename: str) -> int | None:
    """The oldest glibc minor a manylinux wheel's tags accept (manylinux2014 = 2.17), None for a pure wheel."""
    found = []
    for plat in {t.platform for t in parse_wheel_filename(filename)[3]}:
        m = re.fullmatch(r"manylinux_2_(\d+)_\w+", plat)
        if m:
            found.append(int(m.group(1)))
        elif plat.startswith(("manylinux2014", "manylinux2010", "manylinux1")):
            found.append({"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}[plat.split("_")[0]])
    return min(found) if found else None


# ---------------------------------------------------------------------------------------------------- the env file
@dataclass
class EnvSpec:
    env: gpu_requirements.GpuEnv
    built_on_node: dict[str, Version] = field(default_factory=dict)     # canonical name -> pinned version

    @property
    def requirements(self) -> list[str]:
        return self.env.full_set()


def load_spec(path: Path) -> EnvSpec:
    """envs/gpu.yaml through the same reader the installs use, cross-checked with a YAML parser."""
    import yaml
    text = path.read_text()
    env = gpu_requirements.parse(text, str(path))
    doc = yaml.safe_load(text)
    pip_lists = [d["pip"] for d in doc.get("dependencies", []) if isinstance(d, dict) and "pip" in d]
    if pip_lists != [env.step1]:
        raise CheckError(f"{path}: envs/gpu_requirements.py reads the pip list as {env.step1}, YAML as "
                         f"{pip_lists}: keep the list one plain requirement a line")
    spec = EnvSpec(env)
    for req_text, opts in env.step2:
        req = Requirement(req_text)
        if "--no-build-isolation" not in opts:
            continue
        pins = [s for s in req.specifier if s.operator == "=="]
        if len(pins) != 1 or len(req.specifier) != 1 or "*" in pins[0].version:
            raise CheckError(f"{path}: `#@step2 {req_text}` is built on the node: pin it to one version (name==X)")
        name = canonicalize_name(req.name)
        if name not in BUILT_ON_NODE_REQUIRES:
            raise CheckError(f"{path}: {req.name} is built on the node (--no-build-isolation) but "
                             f"envs/check_gpu_env.py has no BUILT_ON_NODE_REQUIRES entry for it: add its "
                             f"Requires-Dist (from its source package's PKG-INFO)")
        spec.built_on_node[name] = Version(pins[0].version)
    return spec


# ---------------------------------------------------------------------------------------------------- the index
def index_files(name: str, index_url: str = INDEX_URL) -> list[str]:
    """File names of a project on the index (PEP 691 JSON, falling back to the HTML page)."""
    url = f"{index_url.rstrip('/')}/{canonicalize_name(name)}/"
    req = urllib.request.Request(url, headers={
        "Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1", "User-Agent": "rlrt-gpu-env-check"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = resp.read().decode()
            ctype = resp.headers.get("Content-Type", "")
    except OSError as e:
        raise CannotRun(f"cannot read {url}: {e}") from e
    if "json" in ctype:
        return [f["filename"] for f in json.loads(body)["files"]]
    return re.findall(r">([^<>]+\.(?:whl|tar\.gz|zip|tar\.bz2))</a>", body)


def files_for(files: list[str], name: str, version: Version) -> tuple[list[str], list[str]]:
    """(wheels, sdists) of exactly `version` among an index's file names."""
    wheels, sdists = [], []
    for fn in files:
        try:
            is_wheel = fn.endswith(".whl")
            n, v = parse_wheel_filename(fn)[:2] if is_wheel else parse_sdist_filename(fn)
        except ValueError:           # a file name the packaging rules do not parse: not a release file of ours
            continue
        if n == canonicalize_name(name) and v == version:
            (wheels if is_wheel else sdists).append(fn)
    return wheels, sdists


def check_built_on_node(spec: EnvSpec, files_of=index_files, glibc_max: int = GLIBC_MAX) -> list[str]:
    """Each package built on the node has a source package and no wheel for the platform at its pin."""
    errors, ok = [], compatible_tags(glibc_max)
    for name, version in spec.built_on_node.items():
        wheels, sdists = files_for(files_of(name), name, version)
        usable = [w for w in wheels
                  if any((t.interpreter, t.abi, t.platform) in ok for t in parse_wheel_filename(w)[3])]
        if usable:
            errors.append(f"{name}=={version} has a wheel for linux x86_64 / CPython 3.12 on the index "
                          f"({usable[0]}): install it as a plain pip line of envs/gpu.yaml, not a #@step2 build")
        if not sdists:
            errors.append(f"{name}=={version}: the index has no source package of this version to build")
    return errors


# ---------------------------------------------------------------------------------------------------- stand-ins
def write_stand_in(folder: Path, name: str, version: Version, requires: list[str]) -> Path:
    """A metadata-only wheel: the resolver sees the built-on-node package at its pin, with its runtime deps."""
    dist = re.sub(r"[-_.]+", "_", name)
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
            name, version, "".join(f"Requires-Dist: {r}\n" for r in requires)),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: rlrt-gpu-env-check\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{k},sha256={base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b'=').decode()},"
        f"{len(v)}\n" for k, v in files.items()) + f"{info}/RECORD,,\n"
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
        z.writestr(f"{info}/RECORD", record)
    return path


# ---------------------------------------------------------------------------------------------------- pip
def find_python312() -> str:
    cands = [os.environ.get("RLRT_PY312", ""), sys.executable if sys.version_info[:2] == PYTHON else "",
             shutil.which("python3.12") or ""]
    cands += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")), reverse=True)
    cands += ["/usr/bin/python3.12", "/usr/local/bin/python3.12"]
    for c in cands:
        if not c:
            continue
        try:
            out = subprocess.run([c, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.stdout.strip() == "True":
            return c
    raise CannotRun("no CPython 3.12 interpreter found (pip evaluates markers like vLLM's "
                    "`python_version > \"3.11\"` with the interpreter it runs under): set RLRT_PY312=/path/to/python3.12")


def pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in PIP_NETWORK_VARS}
    env["PIP_CONFIG_FILE"] = os.devnull          # no pip.conf: no local find-links, extra index or constraints
    return env


def pip_command(requirements_file: Path, report: Path, find_links: Path, python312: str,
                glibc_max: int = GLIBC_MAX) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "--python", python312, "install", "--dry-run", "--ignore-installed",
           "--report", str(report), "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
           "--abi", "cp312"]
    for p in platforms(glibc_max):
        cmd += ["--platform", p]
    cmd += ["--index-url", INDEX_URL, "--find-links", str(find_links), "--use-feature=fast-deps",
            "--disable-pip-version-check", "--no-input", "-r", str(requirements_file)]
    return cmd


def diagnose_failure(output: str, files_of=index_files) -> list[str]:
    """pip's failed resolution as one message per cause: a conflict, or a package without a usable wheel."""
    msgs = []
    if "ResolutionImpossible" in output or "conflicting dependencies" in output or "conflict is caused by" in output:
        lines = output.splitlines()
        start = next((i for i, l in enumerate(lines) if "conflict is caused by" in l), None)
        block = lines[start:start + 12] if start is not None else [l for l in lines if l.startswith("ERROR")]
        msgs.append("conflicting requirements in envs/gpu.yaml's set:\n    " +
                    "\n    ".join(l.strip() for l in block if l.strip()))
    for req_text in dict.fromkeys(re.findall(r"No matching distribution found for (\S+)", output)):
        req = Requirement(req_text)
        name = canonicalize_name(req.name)
        try:
            files = files_of(name)
        except CannotRun:
            files = None
        wheels, sdists = [], []
        for fn in files or []:
            try:
                v = parse_wheel_filename(fn)[1] if fn.endswith(".whl") else parse_sdist_filename(fn)[1]
            except ValueError:
                continue
            if req.specifier.contains(v, prereleases=True) or not req.specifier:
                (wheels if fn.endswith(".whl") else sdists).append(fn)
        if files is None:
            why = "(the index could not be asked why)"
        elif sdists and not wheels:
            why = (f"the index has only its source package ({sdists[0]}): pip would build it on the node, and one "
                   f"whose build imports torch fails under build isolation. Install it after torch in a `#@step2 "
                   f"{req_text} --no-build-isolation` line of envs/gpu.yaml, with its runtime requirements in "
                   f"envs/check_gpu_env.py's BUILT_ON_NODE_REQUIRES")
        elif wheels:
            why = (f"its wheels are for other platforms or Pythons only (e.g. {wheels[0]}): none for linux x86_64 / "
                   f"CPython 3.12 / glibc <= 2.{GLIBC_MAX}")
        else:
            why = "no release on the index satisfies it"
        msgs.append(f"unbuildable package: {req_text}: {why}")
    if not msgs:
        tail = "\n    ".join(l for l in output.splitlines() if l.startswith("ERROR"))[-3000:]
        msgs.append("pip's resolution failed:\n    " + (tail or output[-3000:]))
    return msgs


# ---------------------------------------------------------------------------------------------------- the report
@dataclass
class Resolution:
    packages: dict[str, Version]                  # canonical name -> version
    glibc: int | None                             # the highest glibc minor the chosen wheels need
    glibc_by: list[str]


def classify_report(report: dict, spec: EnvSpec, stand_in_dir: str | None = None) -> tuple[Resolution, list[str]]:
    """Every resolved package is a wheel from the index, or the stand-in of a package built on the node at its pin."""
    errors, packages, glibc = [], {}, {}
    seen_stand_ins = set()
    for item in report.get("install", []):
        name = canonicalize_name(item["metadata"]["name"])
        version = Version(item["metadata"]["version"])
        packages[name] = version
        url = item["download_info"]["url"]
        filename = url.rsplit("/", 1)[-1]
        is_stand_in = url.startswith("file:") and (stand_in_dir is None or stand_in_dir in url)
        if is_stand_in:
            seen_stand_ins.add(name)
            if name not in spec.built_on_node:
                errors.append(f"{name}=={version} came from the stand-in folder but is not built on the node")
            elif version != spec.built_on_node[name]:
                errors.append(f"{name}: resolved {version}, envs/gpu.yaml builds {spec.built_on_node[name]}")
            continue
        if name in spec.built_on_node:
            errors.append(f"{name}=={version} resolved from the index ({filename}), not as the package envs/gpu.yaml "
                          f"builds on the node")
        if not filename.endswith(".whl"):
            errors.append(f"unexpected package without a wheel: {name}=={version} ({filename}): pip would build it "
                          f"on the node; only {sorted(spec.built_on_node) or 'nothing'} is built there")
            continue
        g = wheel_glibc(filename)
        if g is not None:
            glibc.setdefault(g, []).append(f"{name}=={version}")
    for name in sorted(set(spec.built_on_node) - seen_stand_ins):
        errors.append(f"{name} is built on the node but is not in the resolved set")
    top = max(glibc) if glibc else None
    return Resolution(packages, top, sorted(glibc.get(top, []))), errors


# ---------------------------------------------------------------------------------------------------- coverage
def imported_modules(src: Path) -> dict[str, set[str]]:
    """Third-party top-level modules imported anywhere in the package (module-level or inside functions)."""
    mods: dict[str, set[str]] = {}
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for mod in names:
                top = mod.split(".")[0]
                if top not in sys.stdlib_module_names and top != "rlrt":
                    mods.setdefault(top, set()).add(str(path.relative_to(src.parent.parent)))
    return mods


def check_coverage(spec: EnvSpec, resolved: dict[str, Version], pyproject: dict,
                   modules: dict[str, set[str]], module_dists: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """(errors, notes): pyproject's runtime dependencies and the package's imports against the resolved set."""
    errors, notes = [], []
    gpu_pins = {}
    for r in spec.requirements:
        req = Requirement(r)
        pins = [s.version for s in req.specifier if s.operator == "=="]
        if pins:
            gpu_pins[canonicalize_name(req.name)] = pins[0]
    for dep in pyproject["project"]["dependencies"]:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        cpu_pin = next((s.version for s in req.specifier if s.operator == "=="), None)
        if name in DRIVER_ONLY:
            continue
        if name not in resolved:
            errors.append(f"pyproject.toml's {req.name} is not in the GPU environment: add `{dep}` to envs/gpu.yaml "
                          f"(#@step3)")
            continue
        if name in gpu_pins and cpu_pin and gpu_pins[name] != cpu_pin and name not in GPU_OVERRIDES:
            errors.append(f"{req.name}: envs/gpu.yaml pins {gpu_pins[name]}, pyproject.toml {cpu_pin}: use one pin")
        if cpu_pin and Version(cpu_pin) != resolved[name]:
            notes.append(f"{req.name} {cpu_pin} (CPU venv) -> {resolved[name]} (GPU env"
                         f"{', pinned by verl[vllm]' if name in GPU_OVERRIDES else ''})")
    for mod, where in sorted(modules.items()):
        dists = [canonicalize_name(d) for d in module_dists.get(mod, [MODULE_DIST.get(mod, mod)])]
        if any(d in DRIVER_ONLY for d in dists):
            in_jobs = sorted(set(where) - set(DRIVER_MODULES))
            if in_jobs:
                errors.append(f"{in_jobs[0]} imports {mod}, which only the driver has (DRIVER_ONLY)")
        elif not any(d in resolved for d in dists):
            errors.append(f"{sorted(where)[0]} imports {mod} ({'/'.join(dists)}), which the GPU environment lacks: "
                          f"add it to envs/gpu.yaml (#@step3)")
    return errors, notes


# ---------------------------------------------------------------------------------------------------- main
def run(env_file: Path, glibc_max: int = GLIBC_MAX, keep_report: Path | None = None) -> int:
    t0 = time.monotonic()
    spec = load_spec(env_file)
    print(f"gpu-env-check: {env_file}: {len(spec.requirements)} requirements "
          f"(step 1: {len(spec.env.step1)}, step 2: {len(spec.env.step2)}, step 3: {len(spec.env.step3)}); "
          f"built on the GPU node: {', '.join(f'{n}=={v}' for n, v in spec.built_on_node.items()) or 'none'}")
    index_files("pip")          # the index answers at all (else exit 2: cannot run here, not a broken env)
    python312 = find_python312()
    errors = check_built_on_node(spec, glibc_max=glibc_max)
    with tempfile.TemporaryDirectory(prefix="rlrt-gpu-env-") as tmp:
        tmp = Path(tmp)
        stand_ins = tmp / "stand-ins"
        stand_ins.mkdir()
        for name, version in spec.built_on_node.items():
            write_stand_in(stand_ins, name, version, BUILT_ON_NODE_REQUIRES[name])
        reqs = tmp / "requirements.txt"
        reqs.write_text("\n".join(spec.requirements) + "\n")
        report_path = tmp / "report.json"
        cmd = pip_command(reqs, report_path, stand_ins, python312, glibc_max)
        print(f"resolving with pip for linux x86_64 / CPython 3.12 / glibc <= 2.{glibc_max} against {INDEX_URL} "
              f"(nothing is installed; about 2 minutes) ...", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=pip_env())
        output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            if re.search(r"(Connection|Network|Name or service|Temporary failure|timed out|SSLError|ProxyError)",
                         output) and "No matching distribution" not in output and "conflict" not in output:
                raise CannotRun("pip could not reach the index:\n" + output[-2000:])
            errors += diagnose_failure(output)
            report = None
        else:
            report = json.loads(report_path.read_text())
            if keep_report:
                shutil.copyfile(report_path, keep_report)
        if report is not None:
            resolution, errs = classify_report(report, spec, str(stand_ins))
            errors += errs
            pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
            import importlib.metadata as md
            cov_errors, notes = check_coverage(spec, resolution.packages, pyproject,
                                               imported_modules(ROOT / "src" / "rlrt"), md.packages_distributions())
            errors += cov_errors
    took = time.monotonic() - t0
    if errors:
        print(f"\ngpu-env-check FAILED ({took:.0f} s):", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    print(f"resolved {len(resolution.packages)} packages, each a wheel for linux x86_64 / CPython 3.12 but "
          f"{', '.join(sorted(spec.built_on_node)) or 'none'} (built on the GPU node with --no-build-isolation after "
          f"torch: envs/gpu.post-deploy.sh)")
    for key in ("torch", "vllm", "transformers", "verl", "flash-attn"):
        if key in resolution.packages:
            print(f"  {key}=={resolution.packages[key]}")
    if resolution.glibc:
        print(f"the chosen wheels need glibc >= 2.{resolution.glibc} ({', '.join(resolution.glibc_by)})")
    print("this package's runtime dependencies and imports are covered; CPU pins that differ in the GPU env:")
    for n in notes:
        print(f"  {n}")
    print(f"gpu-env-check passed in {took:.0f} s (resolved only: nothing was installed or built)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--file", type=Path, default=gpu_requirements.DEFAULT_FILE, help="the conda env file to check")
    ap.add_argument("--glibc-max", type=int, default=GLIBC_MAX, help="highest manylinux_2_X tag to accept")
    ap.add_argument("--report", type=Path, help="keep pip's installation report here")
    args = ap.parse_args(argv)
    try:
        return run(args.file, args.glibc_max, args.report)
    except CheckError as e:
        print(f"gpu-env-check FAILED: {e}", file=sys.stderr)
        return 1
    except (CannotRun, ValueError) as e:
        kind = "FAILED" if isinstance(e, ValueError) else "could not run"
        print(f"gpu-env-check {kind}: {e}", file=sys.stderr)
        return 1 if isinstance(e, ValueError) else 2


if __name__ == "__main__":
    sys.exit(main())
