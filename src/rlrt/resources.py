"""What one job asks the scheduler for: the config's ``resources`` block -> Snakemake resources -> sbatch flags.

Pure functions of the (validated) config; rules/common.smk turns them into each rule's ``resources:`` and the
GPU count the backend gets. The flags come from snakemake-executor-plugin-slurm 2.8 (``submit_string.py``,
``utils.set_gres_string``):

==========================  ===============================  ==========================================
config (``resources.<k>``)  Snakemake resource               sbatch
==========================  ===============================  ==========================================
``mem_mb``                  ``mem_mb``                       ``--mem <mb>``
``runtime`` (minutes)       ``runtime``                      ``-t <min>``
``cpus``                    ``cpus_per_task`` (and threads)  ``--cpus-per-task=<n>``
``partition``               ``slurm_partition``              ``-p <partition>``
``gpus`` (gpu_flag gpus)    ``gpu`` (+ ``gpu_model``)        ``--gpus=<n>`` / ``--gpus=<model>:<n>``
``gpus`` (gpu_flag gres)    ``gres`` (+ ``gpus``)            ``--gres=gpu:<n>`` / ``--gres=gpu:<model>:<n>``
``gpus`` > 0                ``nodes: 1``                     ``--nodes=1``
``gres``                    ``gres``                         ``--gres=<gres>`` (non-GPU generic resources)
``constraint``              ``constraint``                   ``-C <constraint>``
``qos``                     ``qos``                          ``--qos=<qos>``
``slurm_extra``             ``slurm_extra``                  appended verbatim
==========================  ===============================  ==========================================

Merge order: ``resources.default`` < ``resources.<kind>`` < ``backbones.<name>.resources.<kind>`` (the last only
for the jobs of a rule whose wildcards name that backbone: evaluation, RL, analyses, the RLT students' jobs).

``gpu_flag: gres`` is for sites whose sbatch refuses ``--gpus``: the plugin reads only ``gpu`` (-> ``--gpus``) and
``gres`` at submission, so the count goes into ``gres``; the ``gpus`` resource beside it is what the plugin's job
step (snakemake-executor-plugin-slurm-jobstep 0.6.1) passes to the ``srun`` that runs the rule inside the job, so
the step holds the job's GPUs explicitly. Snakemake's local scheduler counts ``gpu`` only: ``--resources gpu=N``
on one node needs the default ``gpu_flag: gpus``.

``--nodes=1`` on every GPU job: ``--gpus=N`` is a per-job total that SLURM may spread over several nodes, while
each GPU stage is one process tree on one node (verl's ``trainer.nnodes=1``, ``torchrun --standalone``, one
vLLM engine).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

# The plugin's own format checks (utils.set_gres_string), applied here at plan time instead of at submission.
GRES_RE = re.compile(r"^[a-zA-Z0-9_]+(:[a-zA-Z0-9_.]+)?(:\d+[TGM]?)?$")
GPU_MODEL_RE = re.compile(r"^[a-zA-Z0-9_.]+$")

# sbatch options a `slurm_extra` may not carry: those this mapping or the plugin sets from other keys (a second
# value would contradict the first, or break the plugin's own job tracking). Long name -> the config key to use.
MANAGED_LONG = {
    "job-name": None, "output": None, "error": None, "parsable": None, "export": None, "comment": None,
    "workdir": None, "chdir": None, "wrap": None, "clusters": None, "ntasks": None, "ntasks-per-gpu": None,
    "account": "RLRT_SLURM_ACCOUNT", "partition": "partition", "mem": "mem_mb", "mem-per-cpu": "mem_mb",
    "mem-per-gpu": "mem_mb", "cpus-per-task": "cpus", "cpus-per-gpu": "cpus", "time": "runtime",
    "constraint": "constraint", "qos": "qos", "nodes": None, "gres": "gres / gpus with gpu_flag: gres",
    "gpus": "gpus", "gpus-per-node": "gpus", "gpus-per-task": "gpus", "requeue": None, "no-requeue": None,
}
MANAGED_SHORT = {"J": "job-name", "o": "output", "e": "error", "D": "chdir", "A": "account", "p": "partition",
                 "n": "ntasks", "c": "cpus-per-task", "t": "time", "C": "constraint", "q": "qos", "N": "nodes",
                 "M": "clusters", "G": "gpus"}


def merged(cfg: dict[str, Any], kind: str, backbone: str | None = None) -> dict[str, Any]:
    """The config values of one job of stage ``kind`` (of ``backbone`` when its rule names one)."""
    res = cfg["resources"]
    r = {**res["default"], **(res.get(kind) or {})}
    if backbone is not None:
        r.update((((cfg["backbones"].get(backbone) or {}).get("resources") or {}).get(kind)) or {})
    return r


def job_gpus(cfg: dict[str, Any], kind: str, backbone: str | None = None) -> int:
    """GPUs of one job: what the backend spreads its work over (verl's trainer.n_gpus_per_node, torchrun's
    processes, vLLM's tensor_parallel_size)."""
    return int(merged(cfg, kind, backbone).get("gpus") or 0)


def snakemake_resources(r: dict[str, Any]) -> dict[str, Any]:
    """Snakemake resources of one job from its merged config values ``r`` (see the module's table)."""
    out: dict[str, Any] = {"mem_mb": int(r["mem_mb"]), "runtime": int(r["runtime"]), "cpus_per_task": int(r["cpus"])}
    gpus = int(r.get("gpus") or 0)
    if gpus:
        out["nodes"] = 1
        model = r.get("gpu_model")
        if r.get("gpu_flag", "gpus") == "gres":
            out["gres"] = f"gpu:{model}:{gpus}" if model else f"gpu:{gpus}"
            out["gpus"] = gpus  # not read at submission: the job step's `srun --gpus=<n>` (see above)
        else:
            out["gpu"] = gpus
            if model:
                out["gpu_model"] = model
    if r.get("gres"):
        out["gres"] = r["gres"]  # validate_resources refuses it next to gpu_flag: gres (one --gres per job)
    for key, name in (("partition", "slurm_partition"), ("constraint", "constraint"), ("qos", "qos"),
                      ("slurm_extra", "slurm_extra")):
        if r.get(key):
            out[name] = r[key]
    return out


def job_resources(cfg: dict[str, Any], kind: str, backbone: str | None = None) -> dict[str, Any]:
    return snakemake_resources(merged(cfg, kind, backbone))


def managed_option(extra: str) -> str | None:
    """The first sbatch option in ``extra`` that the workflow or the plugin already sets, as ``--long-name``."""
    for tok in shlex.split(extra):
        if tok.startswith("--"):
            name = tok[2:].split("=", 1)[0]
            if name in MANAGED_LONG:
                return f"--{name}"
        elif tok.startswith("-") and len(tok) >= 2 and tok[1] in MANAGED_SHORT:
            return f"--{MANAGED_SHORT[tok[1]]}"
    return None


def _check_block(r: dict[str, Any], key: str, merged_r: dict[str, Any]) -> tuple[str, str] | None:
    """The first problem of one resources block ``r`` (at config key ``key``), as '<key>.<field>': message."""
    gres = r.get("gres")
    if gres:
        if not GRES_RE.match(gres):
            return (f"{key}.gres", f"{gres!r} is not a GRES the SLURM plugin accepts ('<name>', '<name>:<count>' "
                                   f"or '<name>:<type>:<count>', e.g. 'nvme:1')")
        if gres.split(":")[0] == "gpu":
            return (f"{key}.gres", "GPUs are asked for with `gpus` (+ `gpu_model`; `gpu_flag: gres` for a site that "
                                   "takes --gres=gpu:N), so that the job's stage learns its GPU count")
    model = r.get("gpu_model")
    if model and not GPU_MODEL_RE.match(model):
        return (f"{key}.gpu_model", f"{model!r} is not a GPU type SLURM accepts (letters, digits, '_' and '.')")
    extra = r.get("slurm_extra")
    if extra:
        try:
            opt = managed_option(extra)
        except ValueError as e:
            return (f"{key}.slurm_extra", f"cannot be split like a shell line ({e})")
        if opt:
            instead = MANAGED_LONG[opt[2:]]
            return (f"{key}.slurm_extra", f"{opt} is set by the workflow or the SLURM plugin"
                                          + (f"; use {instead} instead" if instead else ""))
    if merged_r.get("gpu_flag") == "gres" and int(merged_r.get("gpus") or 0) and merged_r.get("gres"):
        field = "gres" if r.get("gres") else "gpu_flag" if "gpu_flag" in r else "gpus"
        return (f"{key}.{field}", f"gpu_flag: gres asks for the GPUs with --gres=gpu:N, and sbatch takes one --gres "
                                  f"per job here: drop gres {merged_r['gres']!r} or use gpu_flag: gpus")
    return None


def resource_problem(cfg: dict[str, Any]) -> tuple[str, str] | None:
    """The first invalid resources setting of ``cfg`` as (config key, message), else None: GRES / GPU model
    formats, GPUs asked for through ``gres``, ``slurm_extra`` repeating a managed option, two --gres."""
    res = cfg["resources"]
    for kind, block in res.items():
        found = _check_block(block or {}, f"resources.{kind}", merged(cfg, kind))
        if found:
            return found
    for name, b in cfg["backbones"].items():
        for kind, block in (b.get("resources") or {}).items():
            found = _check_block(block or {}, f"backbones.{name}.resources.{kind}", merged(cfg, kind, name))
            if found:
                return found
    return None
