"""What every stage shares: one argument convention and logging.

A stage is run as ``python -m rlrt.stages.<name> --cfg '<json>' --<path> ...``: ``--cfg`` is the slice of the
(validated) workflow config the rule hands it as ``params``; paths are the rule's declared inputs and outputs.
Every stage also watches its Snakemake driver (rlrt.driverwatch): a job whose driver was killed stops. Run as a
job (``argv`` None: the command line), a stage's failure always writes its cause -- exception, path, and for a full
disk the mount and its free bytes -- to its log, or where the log's disk cannot take it, to Snakemake's stderr
(rlrt.joblog).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--cfg", required=True, help="JSON config slice (from the rule's params)")
    p.add_argument("--threads", type=int, default=1)
    return p


def _paths(args: argparse.Namespace) -> list[str]:
    """The path arguments of a stage (``--<path>`` values with a ``/``; not ``--cfg``): the file systems a
    failure's cause checks for a full disk."""
    out: list[str] = []
    for key, value in vars(args).items():
        for v in value if isinstance(value, list) else [value]:
            if key != "cfg" and isinstance(v, str) and os.sep in v:
                out.append(v)
    return out


def parse(p: argparse.ArgumentParser, argv: list[str] | None = None, *,
          offline: bool = True) -> tuple[argparse.Namespace, dict[str, Any]]:
    """``offline``: the stage never reaches a hub (checkpoints and tokenizers are local folders), so
    ``HF_HUB_OFFLINE=1`` unless the caller set it. Only the stages that stage weights / data sets from the hub
    pass ``offline=False``; they still honour a ``HF_HUB_OFFLINE`` the caller set (an air-gapped cluster)."""
    from rlrt.driverwatch import watch_driver

    watch_driver()  # a job of a killed driver stops instead of running on beside the rerun's
    if offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = p.parse_args(argv)
    if argv is None:  # the job's entry point (a test's in-process main(argv) keeps pytest's streams)
        from rlrt.joblog import install

        rule, wildcards = os.environ.get("RLRT_RULE"), os.environ.get("RLRT_WILDCARDS")
        name = (f"{rule}[{wildcards}]" if wildcards else rule) if rule else p.prog
        install(f"job {name}", _paths(args))
    cfg = json.loads(args.cfg)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr, force=True)
    from rlrt.backends.local.model import set_threads

    set_threads(args.threads)
    return args, cfg
