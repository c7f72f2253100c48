"""A real single-node SLURM cluster for tests: munged + slurmctld + slurmd on localhost.

Everything (munge key and socket, slurm.conf, state and spool directories, logs) lives in one
temporary directory, and clients find the cluster through the `SLURM_CONF` environment variable,
so the cluster never touches /etc and two test sessions on one machine do not collide (each picks
its own ports and node name). It needs root (slurmd launches jobs as the submitting user) and
Debian's `slurm-wlm` and `munge` packages; `ensure_installed` installs them with apt-get when it
can. `LocalSlurm.start` raises `ClusterUnavailable` with the reason when the cluster cannot run, so
tests can skip with that reason.

Run `python tests/slurm_cluster.py` to start a cluster by hand and print the environment to use.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")


class ClusterUnavailable(RuntimeError):
    """The local SLURM cluster cannot be installed or started here; the message says why."""


def _missing() -> list[str]:
    return [exe for exe in DAEMONS + CLIENTS + ("munge",) if shutil.which(exe) is None]


def ensure_installed(timeout_s: float = 900) -> None:
    """Install Debian's slurm-wlm and munge with apt-get if a daemon or client is missing.

    Raises:
        ClusterUnavailable: not root, no apt-get, or the install failed.
    """
    missing = _missing()
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ClusterUnavailable(
            f"SLURM is not installed ({', '.join(missing)} missing) and cannot be installed here "
            "(needs root and apt-get). Install it with: apt-get install -y slurm-wlm munge")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"]
    log.info("installing SLURM: %s", " ".join(cmd))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0 or _missing():
        raise ClusterUnavailable(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}); still missing: "
            f"{', '.join(_missing())}. Last output:\n{(proc.stdout + proc.stderr)[-1500:]}")


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _memory_mb() -> int:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(pages // 2**20 * 0.9)


class LocalSlurm:
    """A single-node SLURM cluster rooted in `root` (a fresh temporary directory by default).

    Args:
        root: directory for config, state and logs; created if missing.
        cpus: CPUs the node advertises; keep it to what the machine has.
        partition: name of the only partition (the default one).
    """

    def __init__(self, root: Path | None = None, cpus: int | None = None,
                 partition: str = "debug") -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="harness-slurm-"))
        self.cpus = cpus or os.cpu_count() or 1
        self.partition = partition
        self.node = f"harness{os.getpid()}"
        self.conf = self.root / "slurm.conf"
        # munged wants every directory above its socket to be searchable by all, and socket paths
        # are short (108 bytes): the socket gets its own directory in the system temp dir.
        self.munge_dir = Path(tempfile.mkdtemp(prefix="harness-munge-"))
        self.munge_socket = self.munge_dir / "munge.sock"
        self._procs: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        """Environment variables a client (sbatch, squeue, ...) needs to reach this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        ctld_port, slurmd_port = _free_ports(2)
        host = socket.gethostname().split(".")[0]
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.munge_dir, 0o755)
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        # cred_expire (AuthInfo) is also how long a requeued job waits before it may start again
        # (default 120 s); 10 s keeps the requeue test short.
        # select/cons_tres with CR_CPU: CPUs are the consumable resource; memory requests must
        # still fit RealMemory. proctrack/linuxproc and task/none avoid cgroups, which containers
        # rarely delegate.
        node = (f"NodeName={self.node} NodeHostname={host} NodeAddr=127.0.0.1 "
                f"CPUs={self.cpus} RealMemory={_memory_mb()} State=UNKNOWN")
        self.conf.write_text(f"""\
ClusterName=harness-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation={self.root / 'state'}
SlurmdSpoolDir={self.root / 'spool'}/%n
SlurmctldPidFile={self.root / 'slurmctld.pid'}
SlurmdPidFile={self.root / 'slurmd'}.%n.pid
SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}
SlurmdLogFile={self.root / 'log' / 'slurmd.log'}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
JobRequeue=1
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
MaxArraySize=1001
{node}
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.stdout", "ab")
        self._procs[name] = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(os.environ, **self.env), start_new_session=True)
        out.close()

    def _log_tail(self, name: str, n: int = 2000) -> str:
        text = ""
        for path in (self.root / "log").glob(f"{name}*"):
            text += f"--- {path}\n{path.read_text(errors='replace')[-n:]}\n"
        return text

    def _wait(self, what: str, check, timeout_s: float, daemon: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self._procs.get(daemon)
            if proc is not None and proc.poll() is not None:
                raise ClusterUnavailable(
                    f"{daemon} exited with {proc.returncode} before {what}.\n"
                    f"{self._log_tail(daemon)}")
            if check():
                return
            time.sleep(0.3)
        raise ClusterUnavailable(f"timed out after {timeout_s:.0f}s waiting for {what}.\n"
                                 f"{self._log_tail(daemon)}")

    def run(self, *cmd: str, check: bool = True, timeout_s: float = 60) -> str:
        """Run a SLURM client command against this cluster and return its stdout."""
        proc = subprocess.run(list(cmd), env=dict(os.environ, **self.env), text=True,
                              capture_output=True, timeout=timeout_s)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}")
        return proc.stdout

    def _node_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%t", check=False)
        return out.strip().rstrip("*") in ("idle", "mix", "alloc")

    def start(self, timeout_s: float = 60) -> "LocalSlurm":
        """Install if needed, write the config, start the three daemons, wait for an idle node."""
        if os.geteuid() != 0:
            raise ClusterUnavailable("a local SLURM cluster needs root (slurmd runs jobs as the "
                                     "submitting user); run the tests as root or in CI")
        ensure_installed()
        self._write_config()
        self._spawn("munged", [
            "munged", "-F", f"--socket={self.munge_socket}",
            f"--key-file={self.root / 'munge.key'}",
            f"--log-file={self.root / 'log' / 'munged.log'}",
            f"--pid-file={self.root / 'munged.pid'}", f"--seed-file={self.root / 'munged.seed'}"])
        self._wait("the munge socket", self.munge_socket.exists, 15, "munged")
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait("slurmctld to answer", lambda: self.run("scontrol", "ping", check=False)
                   .find("UP") >= 0, timeout_s, "slurmctld")
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node])
        self._wait(f"node {self.node} to become idle", self._node_idle, timeout_s, "slurmd")
        log.info("local SLURM up in %s (node %s, %d CPUs)", self.root, self.node, self.cpus)
        return self

    def stop(self) -> None:
        """Cancel every job and stop the daemons (slurmd, slurmctld, munged); logs and state stay
        in `root`."""
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--user", "root", check=False)
            time.sleep(1)
        for name in reversed(DAEMONS):
            proc = self._procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self.munge_dir, ignore_errors=True)

    def __enter__(self) -> "LocalSlurm":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    cluster = LocalSlurm(cpus=os.cpu_count()).start()
    print(f"export SLURM_CONF={cluster.conf}    # Ctrl-C stops the cluster")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        cluster.stop()
