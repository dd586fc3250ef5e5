"""A real Ray cluster on this machine for the tests: ``ray start --head`` (its
dashboard and job server bound to 127.0.0.1, no CPUs of its own, as Ray advises for a
head node) and worker nodes joined to it, each started in a session of its own so
that it can be killed alone (a node lost) and stopped at the end without touching any
other Ray on the machine. Every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.sshd import _descendants, free_port, free_ports

RAY = Path(sys.executable).parent / "ray"


def ray_available() -> bool:
    try:
        import ray.job_submission  # noqa: F401
    except ImportError:
        return False
    return RAY.exists()


class RayCluster:
    """A head node (0 CPUs) and ``workers`` nodes of ``cpus`` CPUs each."""

    def __init__(self, cpus: int = 2) -> None:
        self.cpus = cpus
        # Ray's socket paths must stay short: a folder right under /tmp
        self.temp = Path(tempfile.mkdtemp(prefix="orchray", dir="/tmp"))
        # the head's ports and each node's dashboard agent's: all different
        self.port, self.dashboard_port, self.client_port, *self._agent_ports = free_ports(8)
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}  # name → its `ray start`
        (self.temp / "tmp").mkdir()
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
                    "TMPDIR": str(self.temp / "tmp"),  # the jobs' scratch, removed at stop
                    "PATH": f"{RAY.parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def _start(self, name: str, args: list[str], timeout: float = 120.0) -> None:
        agent = self._agent_ports.pop() if self._agent_ports else free_port()
        log = (self.temp / f"{name}.log").open("wb")
        proc = subprocess.Popen([str(RAY), "start", "--disable-usage-stats",
                                 "--node-ip-address", "127.0.0.1",
                                 "--object-store-memory", str(100 * 1024 * 1024),
                                 "--dashboard-agent-listen-port", str(agent), *args],
                                stdout=log, stderr=subprocess.STDOUT, cwd=self.temp,
                                env=self.env, start_new_session=True)
        self.nodes[name] = proc
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        if code != 0:
            raise RuntimeError(f"ray start ({name}) failed: "
                               f"{(self.temp / f'{name}.log').read_text()[-2000:]}")

    def start(self) -> RayCluster:
        self._start("head", ["--head", "--port", str(self.port), "--num-cpus", "0",
                             "--dashboard-host", "127.0.0.1",
                             "--dashboard-port", str(self.dashboard_port),
                             "--ray-client-server-port", str(self.client_port),
                             "--temp-dir", str(self.temp)])
        self.wait_answering()
        self.add_node()
        return self

    def add_node(self, name: str = "node2") -> None:
        """Join a node of ``cpus`` CPUs; returns once Ray counts its CPUs."""
        self._start(name, ["--address", f"127.0.0.1:{self.port}", "--num-cpus",
                           str(self.cpus)])
        deadline = time.monotonic() + 60
        while self.free_cpus() < self.cpus:
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {name} did not join in 60 s")
            time.sleep(0.5)

    def free_cpus(self) -> float:
        import json

        with urllib.request.urlopen(f"{self.address}/api/cluster_status", timeout=10) as r:
            usage = json.load(r)["data"]["clusterStatus"]["loadMetricsReport"]["usage"]
        used, total = usage.get("CPU", [0.0, 0.0])
        return float(total - used)

    def wait_answering(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.address}/api/version", timeout=5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def _members(self, name: str) -> set[int]:
        """Every process of a node: its session's, and all below them (the jobs' and
        actors' processes, in sessions of their own)."""
        sid = self.nodes[name].pid
        roots = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getsid(int(entry)) == sid:
                        roots.add(int(entry))
                except OSError:
                    continue
        return roots | _descendants(roots)

    def kill_node(self, name: str = "node2") -> None:
        """The node is lost: every process of it SIGKILLed at once."""
        for pid in self._members(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        del self.nodes[name]

    def stop(self) -> None:
        """Kill every node (workers first), and remove the cluster's folder."""
        for name in [n for n in self.nodes if n != "head"] + ["head"]:
            if name in self.nodes:
                self.kill_node(name)
        shutil.rmtree(self.temp, ignore_errors=True)
