"""The GPU environment's pip requirements, read from envs/gpu.yaml: the one place they are written.

Standard library only: it runs in a bare Python before anything is installed (the Apptainer build of envs/gpu.def,
the post-deploy script of envs/gpu.yaml) as well as in `make gpu-env-check` (envs/check_gpu_env.py).

envs/gpu.yaml installs in three steps, because flash-attn (pinned by verl[fsdp]==0.9.1) exists on PyPI only as a
source package whose setup.py imports torch (see the header of envs/gpu.yaml):

  step 1  the `pip:` list of the conda file (conda's own `pip install -r`): torch and flash-attn's build tools;
  step 2  lines `#@step2 REQ [pip options]`: one `pip install` per line, after step 1 (flash-attn, built against the
          installed torch with --no-build-isolation);
  step 3  lines `#@step3 REQ`: ONE `pip install` of step 1's and step 3's requirements together (verl with its extras
          and this package's runtime dependencies); flash-attn is installed by then, so pip never builds it.

    python envs/gpu_requirements.py step1|step2|step3 [envs/gpu.yaml]    # one requirement (step 2: + options) a line
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_FILE = Path(__file__).resolve().parent / "gpu.yaml"
_MARK = re.compile(r"^#@(step2|step3)\s+(\S.*?)\s*$")


@dataclass
class GpuEnv:
    step1: list[str] = field(default_factory=list)                       # requirement strings
    step2: list[tuple[str, list[str]]] = field(default_factory=list)     # (requirement, pip options)
    step3: list[str] = field(default_factory=list)

    def full_set(self) -> list[str]:
        """Every requirement of the environment, in install order (step 2 without its pip options)."""
        return self.step1 + [req for req, _ in self.step2] + self.step3


def _strip_comment(text: str) -> str:
    return text.split(" #", 1)[0].split("\t#", 1)[0].strip()


def parse(text: str, source: str = "envs/gpu.yaml") -> GpuEnv:
    """Parse the conda file's `pip:` list (step 1) and its `#@step2` / `#@step3` lines.

    Only the layout envs/gpu.yaml uses is accepted (a `- pip:` item followed by `- requirement` items, one a line);
    anything else in that list (flow style, an option line) is an error naming the line, not a silent skip."""
    env = GpuEnv()
    pip_indent = None          # indentation of the `- pip:` line while inside its list
    item_indent = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        stripped = line.strip()
        m = _MARK.match(stripped)
        if m:
            step, rest = m.groups()
            parts = _strip_comment(rest).split()
            if not parts:
                raise ValueError(f"{source}:{lineno}: empty #@{step} line")
            req, opts = parts[0], parts[1:]
            if step == "step2":
                env.step2.append((req, opts))
            else:
                if opts:
                    raise ValueError(f"{source}:{lineno}: #@step3 takes one requirement and no pip options "
                                     f"(step 3 is a single pip call): {stripped!r}")
                env.step3.append(req)
            continue
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if pip_indent is not None:
            if indent > pip_indent and stripped.startswith("- "):
                if item_indent is None:
                    item_indent = indent
                if indent != item_indent:
                    raise ValueError(f"{source}:{lineno}: unexpected indentation in the pip list: {stripped!r}")
                item = _strip_comment(stripped[2:])
                if not item or item.startswith("-") or " " in item or item.startswith(("'", '"', "[", "{")):
                    raise ValueError(f"{source}:{lineno}: the pip list takes one plain requirement a line "
                                     f"(no options, no quoting): {stripped!r}")
                env.step1.append(item)
                continue
            pip_indent = item_indent = None
        if stripped == "- pip:":
            if env.step1:
                raise ValueError(f"{source}:{lineno}: a second `- pip:` list")
            pip_indent = indent
    if not env.step1:
        raise ValueError(f"{source}: no `- pip:` list with requirements")
    return env


def read(path: str | Path = DEFAULT_FILE) -> GpuEnv:
    path = Path(path)
    return parse(path.read_text(), str(path))


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("step1", "step2", "step3"):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    env = read(argv[1] if len(argv) > 1 else DEFAULT_FILE)
    if argv[0] == "step1":
        print("\n".join(env.step1))
    elif argv[0] == "step2":
        print("\n".join(" ".join([req, *opts]) for req, opts in env.step2))
    else:
        print("\n".join(env.step3))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
