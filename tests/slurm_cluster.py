"""A real single-node SLURM cluster for tests: installed from Debian's packages, started without systemd, always
torn down.

Why a real one: the SLURM executor plugin turns each rule's resources into sbatch flags and reads job states back
from ``squeue``; a mock would only test our reading of its source. The facts this module relies on were measured on
this machine kind (/work/shared/notes/slurm-single-node.md):

- Debian 12 ``slurmctld slurmd slurm-client munge`` (22.05); daemons start as plain processes and stop by their
  pid files. StateSaveLocation is wiped before a start: a node drained by an earlier run stays drained otherwise.
- Fake GPUs: gres.conf ``File=`` must name *character devices* (``mknod gpuN c 1 3``, the numbers of /dev/null);
  regular files are rejected and file-less GPUs drain the node. Jobs asking ``--gpus`` then get
  CUDA_VISIBLE_DEVICES, and SLURM books the GPUs exactly as on a real node.
- No slurmdbd: accounting is off, so the Snakemake profile must query ``squeue`` (``MinJobAge`` keeps a finished
  job visible to ``squeue``/``scontrol`` for that many seconds).

Only root can do this (apt, mknod, daemons running jobs as root). Where that is impossible the caller skips the
test with the reason -- except under ``CI``, where the SLURM test must run and a skip would hide that it did not
(:func:`unavailable`).

The cluster is private to the run: its own config folder (``SLURM_CONF`` in :attr:`Cluster.env`, plus a link at
/etc/slurm/slurm.conf for the srun inside jobs, made only where no slurm.conf exists and removed at the end), its
own state and spool folders, free TCP ports picked at start. munge is the system's (``/etc/munge/munge.key``,
``/run/munge``): a running munged is reused and left alone, one started here is stopped here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "scancel")
MUNGE_SOCKET_DIR = Path("/run/munge")
MUNGE_KEY = Path("/etc/munge/munge.key")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")  # where srun inside a job looks (see _link_system_conf)
MIN_JOB_AGE = 600  # seconds a finished job stays in squeue / scontrol (read back by the tests, polled by squeue)
HEADER = "# Written by tests/slurm_cluster.py: a private single-node cluster for one test session."
FEATURE = "rlrt_feat"  # the node's one feature: a job's `-C rlrt_feat` (constraint) can run, any other stays pending


class ClusterUnavailable(RuntimeError):
    """This machine cannot host the test cluster (not root, no apt, install or start failed)."""


def unavailable(reason: str) -> None:
    """Skip the calling test with ``reason`` -- or fail it when the ``CI`` environment variable is set: CI must
    run the SLURM test, and a skipped one would look green."""
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"SLURM test cluster unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"SLURM test cluster unavailable: {reason}")


@dataclass(frozen=True)
class Cluster:
    """A running cluster: its partitions (the first is the default), node name, GPU count, and the environment
    (``SLURM_CONF``) under which sbatch / squeue / scontrol reach it."""

    conf: Path
    node: str
    partitions: tuple[str, ...]
    gpus: int
    env: dict = field(repr=False)

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> str:
        """Run a SLURM client command against this cluster; its stdout."""
        proc = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def job(self, job_id: str | int) -> dict[str, str]:
        """``scontrol show job -o <id>`` as a key -> value mapping (while MinJobAge keeps the job)."""
        out = self.run("scontrol", "show", "job", "-o", str(job_id)).strip()
        fields = {}
        for tok in out.split(" "):
            if "=" in tok:
                k, v = tok.split("=", 1)
                fields.setdefault(k, v)
        return fields

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still knows (running, pending, or finished within MinJobAge)."""
        out = self.run("scontrol", "show", "job", "-o").strip()
        if not out or out.startswith("No jobs"):
            return []
        return [self.job(line.split()[0].split("=", 1)[1]) for line in out.splitlines() if line.startswith("JobId=")]


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def install() -> None:
    """Install the Debian packages if a binary is missing (root + apt only); ClusterUnavailable otherwise.

    ``--no-install-recommends`` keeps it to the daemons and clients; the packages' start scripts are denied by
    policy-rc.d in containers and unused here either way."""
    missing = [b for b in BINARIES if not Path(b).exists()] + [c for c in CLIENTS if not shutil.which(c)]
    if not missing:
        return
    if not _is_root():
        raise ClusterUnavailable(f"not root, and {', '.join(missing)} missing")
    if not shutil.which("apt-get"):
        raise ClusterUnavailable(f"no apt-get to install {', '.join(PACKAGES)} ({', '.join(missing)} missing)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:  # a fresh image has no package lists yet
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, timeout=600)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise ClusterUnavailable(f"apt-get install {' '.join(PACKAGES)} failed: {proc.stderr.strip()[-2000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(pid: int | None, timeout: float = 15) -> None:
    """SIGTERM one process by its pid, SIGKILL it when it has not ended within ``timeout`` seconds."""
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not _alive(pid):
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _munge_running() -> bool:
    """A munged answers on the system socket (``munge -n | unmunge`` round trip)."""
    if not shutil.which("munge"):
        return False
    proc = subprocess.run("munge -n | unmunge", shell=True, capture_output=True, text=True, timeout=20)
    return proc.returncode == 0


def _start_munge(log: Path) -> int | None:
    """Reuse a running munged (returns None: not ours to stop), else start one as user munge; its pid."""
    if _munge_running():
        return None
    if not MUNGE_KEY.exists():
        subprocess.run(["mungekey", "--create", "--keyfile", str(MUNGE_KEY)], check=True, capture_output=True)
        shutil.chown(MUNGE_KEY, "munge", "munge")
        MUNGE_KEY.chmod(0o400)
    MUNGE_SOCKET_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    shutil.chown(MUNGE_SOCKET_DIR, "munge", "munge")
    pidfile = MUNGE_SOCKET_DIR / "munged.pid"
    proc = subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged", f"--pid-file={pidfile}"],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise ClusterUnavailable(f"munged did not start: {proc.stderr.strip()}")
    for _ in range(50):
        if _munge_running():
            return _pid(pidfile)
        time.sleep(0.1)
    raise ClusterUnavailable(f"munged started but does not answer ({log})")


def _detected_node() -> dict[str, str]:
    """The hardware line ``slurmd -C`` detects (CPUs, sockets, cores, threads, RealMemory), as key -> value."""
    out = subprocess.run(["/usr/sbin/slurmd", "-C"], capture_output=True, text=True, timeout=30, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("NodeName="))
    return dict(tok.split("=", 1) for tok in line.split())


def write_config(folder: Path, partitions: tuple[str, ...], gpus: int, mem_fraction: float = 0.7) -> tuple[Path, str]:
    """slurm.conf, gres.conf and cgroup.conf for one node with ``gpus`` fake GPUs, in ``folder``; (conf, node)."""
    hw = _detected_node()
    node = hw["NodeName"]
    mem = int(int(hw["RealMemory"]) * mem_fraction)  # headroom: above the detected value the node would drain
    for sub in ("state", "spool", "log", "dev"):
        shutil.rmtree(folder / sub, ignore_errors=True)
        (folder / sub).mkdir(parents=True)
    for i in range(gpus):  # character devices (those of /dev/null): SLURM rejects regular files as GPU files
        os.mknod(folder / "dev" / f"gpu{i}", 0o666 | 0o020000, os.makedev(1, 3))
    layout = " ".join(f"{k}={hw[k]}" for k in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket",
                                                "ThreadsPerCore") if k in hw)
    parts = "\n".join(f"PartitionName={p} Nodes={node} Default={'YES' if i == 0 else 'NO'} MaxTime=INFINITE "
                      f"State=UP" for i, p in enumerate(partitions))
    conf = folder / "slurm.conf"
    conf.write_text(f"""\
{HEADER}
ClusterName=rlrt-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={folder / 'state'}
SlurmdSpoolDir={folder / 'spool'}
SlurmctldPidFile={folder / 'slurmctld.pid'}
SlurmdPidFile={folder / 'slurmd.pid'}
SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}
SlurmdLogFile={folder / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MinJobAge={MIN_JOB_AGE}
JobRequeue=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 {layout} RealMemory={mem} Gres=gpu:{gpus} Features={FEATURE} State=UNKNOWN
{parts}
""")
    gpu_files = f"{folder / 'dev'}/gpu[0-{gpus - 1}]" if gpus > 1 else f"{folder / 'dev'}/gpu0"
    (folder / "gres.conf").write_text(f"NodeName={node} Name=gpu File={gpu_files}\n" if gpus else "")
    # Read by slurmd even when no cgroup plugin is configured; the settings below are the documented defaults.
    (folder / "cgroup.conf").write_text("CgroupPlugin=autodetect\nConstrainCores=no\nConstrainRAMSpace=no\n"
                                        "ConstrainDevices=no\n")
    return conf, node


def _link_system_conf(conf: Path) -> bool:
    """Point /etc/slurm/slurm.conf at ``conf``; True when this call made the link (teardown removes it).

    Why: the plugin's job step (snakemake-executor-plugin-slurm-jobstep 0.6.1) runs the rule through a nested
    ``srun`` with every SLURM_* variable but the job's identity removed -- SLURM_CONF too -- so srun inside the job
    finds the cluster only at the default path. A real slurm.conf already there is never replaced."""
    if SYSTEM_CONF.is_symlink() and SYSTEM_CONF.resolve() == conf.resolve():
        return False
    if SYSTEM_CONF.is_symlink() and not (SYSTEM_CONF.exists() and HEADER not in SYSTEM_CONF.read_text()):
        SYSTEM_CONF.unlink()  # left by a run killed before its teardown: dangling, or one of ours
    if SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink():
        raise ClusterUnavailable(f"{SYSTEM_CONF} exists (a real cluster's config?): not replacing it")
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SYSTEM_CONF.symlink_to(conf)
    return True


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return f"== {path.name}\n{path.read_text(errors='replace')[-n:]}"
    except OSError:
        return f"== {path.name}: (missing)"


@contextlib.contextmanager
def single_node_slurm(folder: Path, partitions: tuple[str, ...] = ("debug",), gpus: int = 2,
                      ready_timeout: float = 60) -> Iterator[Cluster]:
    """Install if needed, configure, start munged / slurmctld / slurmd, wait until the node is idle, yield the
    :class:`Cluster`; on exit (also on error) cancel every job, stop the daemons by their pid files and remove the
    state. Raises ClusterUnavailable when the machine cannot host it."""
    if not _is_root():
        raise ClusterUnavailable("not root (mknod, daemons and apt need root)")
    install()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    conf, node = write_config(folder, partitions, gpus)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    env.pop("SLURM_JOB_ID", None)
    cluster = Cluster(conf=conf, node=node, partitions=tuple(partitions), gpus=gpus, env=env)
    munge_pid, linked = None, False
    try:
        linked = _link_system_conf(conf)
        munge_pid = _start_munge(folder / "log" / "munged.log")
        for daemon in ("slurmctld", "slurmd"):
            proc = subprocess.run([f"/usr/sbin/{daemon}", "-f", str(conf)], env=env, capture_output=True,
                                  text=True, timeout=60)
            if proc.returncode != 0:
                raise ClusterUnavailable(f"{daemon} did not start: {proc.stderr.strip()}\n"
                                         f"{_tail(folder / 'log' / f'{daemon}.log')}")
        end = time.monotonic() + ready_timeout
        state = ""
        while time.monotonic() < end:
            proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True,
                                  timeout=30)
            state = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else proc.stderr.strip()
            if state == "idle":
                break
            if state.startswith(("drain", "inval", "down")) and "unknown" not in state:
                reason = subprocess.run(["scontrol", "show", "node", node], env=env, capture_output=True,
                                        text=True).stdout
                raise ClusterUnavailable(f"node {node} is {state}:\n{reason}\n{_tail(folder / 'log' / 'slurmd.log')}")
            time.sleep(0.5)
        else:
            raise ClusterUnavailable(f"node {node} not idle after {ready_timeout}s (last: {state!r})\n"
                                     f"{_tail(folder / 'log' / 'slurmctld.log')}\n"
                                     f"{_tail(folder / 'log' / 'slurmd.log')}")
        yield cluster
    finally:
        _teardown(cluster, folder, munge_pid)
        if linked:
            SYSTEM_CONF.unlink(missing_ok=True)


def _teardown(cluster: Cluster, folder: Path, munge_pid: int | None) -> None:
    """Cancel this cluster's jobs and wait for them to end (slurmstepd outlives slurmd otherwise), then stop
    slurmd, slurmctld and a munged started here, and remove the state folders."""
    ctld = _pid(folder / "slurmctld.pid")
    if _alive(ctld):
        with contextlib.suppress(Exception):
            for p in cluster.partitions:
                cluster.run("scancel", "--partition", p, "--full", check=False)
            end = time.monotonic() + 30
            while time.monotonic() < end:
                if not cluster.run("squeue", "-h", "-t", "RUNNING,PENDING,COMPLETING,SUSPENDED", check=False).strip():
                    break
                time.sleep(0.5)
    _stop(_pid(folder / "slurmd.pid"))
    _stop(ctld)
    _stop(munge_pid)
    for sub in ("state", "spool", "dev"):
        shutil.rmtree(folder / sub, ignore_errors=True)
