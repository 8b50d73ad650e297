"""Where the workflow writes: ``results`` is a folder of its own (never the filesystem root, a system folder,
the home folder itself or an existing file), and a local ``tracking.uri`` store points where the runs' records
will be found."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rlrt.errors import ConfigError

SYSTEM_FOLDERS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt", "/opt",
    "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/bin", "/usr/lib", "/usr/local",
    "/usr/local/bin", "/usr/share", "/var", "/var/lib", "/var/log", "/var/tmp", "/Applications", "/Library",
    "/System", "/Users", "/Volumes", "/private", "/private/tmp", "/private/var",
})
"""Folders a results tree must not be: the workflow creates, overwrites and (rerunning a job) deletes
``<results>/data``, ``<results>/runs``, ``<results>/logs``, ... there."""


def check_results(cfg: dict[str, Any]) -> None:
    """``results`` names a folder the workflow may fill: not ``/``, a system folder
    (:data:`SYSTEM_FOLDERS`) or the home folder itself, as written or after following links; not an existing file,
    and no existing file on its way (``out/my/results`` with ``out/my`` a file). Relative paths are relative to the
    working directory (Snakemake's ``--directory``)."""
    raw = cfg["results"]
    home = {os.path.abspath(os.path.expanduser("~"))} | ({os.path.abspath(os.environ["HOME"])}
                                                       if os.environ.get("HOME") else set())
    for where in {os.path.abspath(raw), os.path.realpath(raw)}:
        if where in SYSTEM_FOLDERS or where in home:
            what = ("the filesystem root" if where == "/" else "the home folder" if where in home
                    else "a system folder")
            raise ConfigError(f"config key 'results': {raw!r} is {what} ({where}); the workflow creates, "
                              f"overwrites and deletes its outputs (data/, runs/, logs/, ...) there, so give it a "
                              f"folder of its own, e.g. results/")
    path = Path(os.path.abspath(raw))
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                which = "is an existing file" if p == path else f"is under {str(p)!r}, an existing file"
                raise ConfigError(f"config key 'results': {raw!r} {which}, not a folder; the workflow writes its "
                                  f"outputs into a results folder, so give it a folder path")
            break


def check_tracking(cfg: dict[str, Any]) -> None:
    """``tracking.uri`` pointing at a local store (``sqlite:///<file>``: its folder; ``file:<folder>``: the folder)
    must point into an existing folder, or under ``results`` (the workflow creates ``<results>/mlflow/``): a typo'd
    path would otherwise put the runs' records somewhere nobody looks. Relative paths are relative to the working
    directory (Snakemake's ``--directory``), as MLflow reads them."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    tracking = cfg["tracking"]
    uri = tracking.get("uri")
    if not tracking["enabled"] or not uri:
        return
    if uri.startswith("sqlite:///"):
        db = uri[len("sqlite:///"):].split("?", 1)[0]
        if db in ("", ":memory:"):
            return
        folder, what = Path(db).parent, "the SQLite file's folder"
    elif uri.startswith("file:"):
        folder, what = Path(url2pathname(urlparse(uri).path) or "."), "the store folder"
    else:
        return  # a tracking server: nothing to check from here
    if folder.is_dir():
        return
    results = Path(os.path.abspath(cfg["results"]))
    if Path(os.path.abspath(folder)).is_relative_to(results):
        return  # created by the workflow (mlflow_init) before any job logs
    raise ConfigError(f"config key 'tracking.uri': {what} {str(folder)!r} does not exist and is not under results "
                      f"({cfg['results']!r}, which the workflow creates); create it or fix the URI")

