"""SSH hosts as places: one place per host of `orch hosts add`.

The host's hub is a folder in its private ``workdir`` (``WORKDIR/hub``): workers
there use it as a plain folder hub; the daemon reads and writes it over SFTP
(:class:`~orchestrator.hubs.sftp.SftpHub`). The place:

- connects (on demand; every ``host_retry`` seconds while the host is away),
  probes the host (its Python, TensorFlow, GPUs, free disk; the result in
  ``.orch/host-status/NAME.json``) and gives the daemon the hub;
- installs orch on the host the way Colab does: the same wheel, unpacked into
  ``WORKDIR/orch-SHA`` (once per content; no pip, nothing from the network), and
  the project's key in ``WORKDIR/key`` (mode 0600: the worker checks that jobs
  come from this project; the key never enters a hub);
- starts one worker per GPU (the CPU when the host has none) detached from the
  SSH session (``setsid nohup``): it outlives a dropped connection and exits
  after ``worker_idle_timeout`` idle;
- kills a worker that lost its lease, when the host can be reached.

A host with a problem (cannot be reached or signed in to, no Python 3.11, no
TensorFlow, too little disk) takes no work; the problem is logged once, kept in
its status file (`orch hosts list` shows it) and named by `orch submit`.
"""

from __future__ import annotations

import hashlib
import shlex
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..config import Project
from ..errors import OrchError
from ..hosts import Host, Hosts, HostStatus, Slot, host_slots
from ..logs import get_logger
from ..models import GpuNeed, WorkerInfo
from . import Availability, Place

if TYPE_CHECKING:
    from ..hubs.base import Hub
    from ..placement import Server
    from ..ssh import HostLink
    from . import Placeable

log = get_logger(__name__)
STARTUP = 15.0  # seconds from asking a host for a worker to its first heartbeat
MIN_PYTHON = (3, 11)

# Run on the host with its Python: what it has, as one JSON line. argv[1]: workdir.
PROBE = r"""
import json, os, shutil, subprocess, sys
from importlib import metadata, util
work = os.path.abspath(os.path.expanduser(sys.argv[1]))
os.makedirs(os.path.join(work, "hub"), exist_ok=True)
tf = ""
if util.find_spec("tensorflow") is not None:
    for dist in ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly"):
        try:
            tf = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            tf = tf or "unknown version"
gpus = []
try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True,
                         timeout=20).stdout
    for line in out.splitlines():
        p = [x.strip() for x in line.split(",")]
        if len(p) == 3 and p[0].isdigit():
            try:
                mem = float(p[2])
            except ValueError:
                mem = None
            gpus.append({"index": p[0], "name": p[1], "memory_mb": mem})
except (OSError, subprocess.SubprocessError):
    pass
print(json.dumps({"python": "%d.%d.%d" % sys.version_info[:3], "tensorflow": tf,
                  "gpus": gpus, "free_mb": shutil.disk_usage(work).free / 2**20,
                  "home": work}))
"""

UNPACK = ("import sys, zipfile, os; d = sys.argv[2]; zipfile.ZipFile(sys.argv[1]).extractall("
          "d + '.part'); os.replace(d + '.part', d)")


def probe(link: HostLink, min_free_mb: float) -> HostStatus:
    """Look at the host (one command); the status names the first problem found."""
    import json

    host = link.host
    code, out, err = link.run(f"{shlex.quote(host.python)} -c {shlex.quote(PROBE)} "
                              f"{shlex.quote(host.workdir)}", timeout=60)
    now = time.time()
    if code != 0:
        why = (f"no Python at {host.python!r} (set it with `orch hosts add … --python PATH`)"
               if code == 127 else f"the probe failed: {(err or out).strip()[-300:]}")
        return HostStatus(name=host.name, checked_at=now, problem=f"host {host.name}: {why}")
    raw = json.loads(out.strip().splitlines()[-1])
    status = HostStatus.from_dict({**raw, "name": host.name, "checked_at": now})
    problem = ""
    if tuple(int(x) for x in status.python.split(".")[:2]) < MIN_PYTHON:
        problem = (f"{host.python} is Python {status.python}; orch needs 3.11 or newer "
                   "(give another with --python)")
    elif not status.tensorflow:
        problem = (f"TensorFlow is not installed for {host.python} (install it there: "
                   f"`{host.python} -m pip install tensorflow`, or give --python)")
    elif status.free_mb is not None and status.free_mb < min_free_mb:
        problem = (f"only {status.free_mb:.0f} MB free in {status.home} (orch wants "
                   f"{min_free_mb:.0f} MB: free some, or set host_min_free_mb)")
    if problem:
        from dataclasses import replace

        status = replace(status, problem=f"host {host.name}: {problem}")
    return status


class SshPlace(Place):
    """One SSH host: its hub, its workers."""

    brings_hub = True

    def __init__(self, project: Project, host: Host) -> None:
        self.project = project
        self.host = host
        self.name = f"ssh:{host.name}"
        self.hosts = Hosts(project.state_dir)
        self._link: HostLink | None = None
        self._hub: Hub | None = None
        self.tried = -1e18  # when it last tried to connect
        self._probing: threading.Thread | None = None
        self._probed: HostStatus | OrchError | None = None  # the probe thread's outcome
        self.problem = ""
        self.wanted: set[str] = set()
        self.started: dict[str, tuple[str, float]] = {}  # slot → (worker id, when)
        self.installed = ""  # the orch folder installed this run

    # ---- the hub ------------------------------------------------------------------

    @property
    def link(self) -> HostLink:
        if self._link is None:
            from ..ssh import HostLink

            self._link = HostLink(self.host, self.hosts.known_hosts)
        return self._link

    def connect_hub(self, now: float) -> Hub | None:
        """The host's hub once connected; None while it cannot be reached or has a
        problem. Connecting and probing happen in a thread (a host that does not
        answer would otherwise hold up the daemon's tick for the connect timeout),
        started at most every ``host_retry`` seconds; its outcome is taken up by the
        next call. Only the daemon's thread calls this."""
        if self._hub is not None and self.link.up and not self.problem:
            return self._hub
        self._hub = None
        if self._probing is not None:
            if self._probing.is_alive():
                return None
            self._probing.join()
            self._probing = None
            outcome, self._probed = self._probed, None
            if isinstance(outcome, HostStatus):
                self.hosts.save_status(outcome)
                self._set_problem(outcome.problem)
                if not outcome.problem:
                    from ..hubs.sftp import SftpHub

                    self._hub = SftpHub(self.link, f"{outcome.home}/hub")
            else:
                self._set_problem(str(outcome))
            return self._hub
        if now - self.tried >= self.project.settings.host_retry:
            self.tried = now
            self._probing = threading.Thread(target=self._probe, daemon=True,
                                             name=f"probe-{self.host.name}")
            self._probing.start()
        return None

    def _probe(self) -> None:
        try:
            self._probed = probe(self.link, self.project.settings.host_min_free_mb)
        except OrchError as exc:
            self._probed = exc

    def _set_problem(self, problem: str) -> None:
        if problem and problem != self.problem:
            log.error("%s; its jobs wait (tried again every %.0f s)", problem,
                      self.project.settings.host_retry)
        elif not problem and self.problem:
            log.info("host %s is back", self.host.name)
        self.problem = problem
        self.hosts.note_problem(self.host.name, problem)

    def status(self) -> HostStatus | None:
        return self.hosts.status(self.host.name)

    # ---- placement ----------------------------------------------------------------

    def owns(self, worker: WorkerInfo) -> bool:
        return worker.hub == self.name

    def can_run(self, job: Placeable) -> bool:
        return job.target in ("auto", "remote", self.name)

    def how_soon(self, job: Placeable, workers: Sequence[WorkerInfo]) -> Availability:
        now = self.fitting(job, workers)
        if now is not None:
            return now
        status = self.status()
        if status is not None and status.problem:
            return Availability(self.name, None, status.problem)
        if job.gpu is GpuNeed.REQUIRED and status is not None and not status.gpus:
            return Availability(self.name, None, f"host {self.host.name} has no GPU")
        return Availability(self.name, STARTUP, f"the daemon starts a worker on host "
                                                f"{self.host.name}")

    def _live(self, workers: Sequence[WorkerInfo], now: float) -> set[str]:
        """Slots with a live worker, or one started lately that has not joined yet."""
        ids = {w.id for w in workers if self.owns(w) and not w.gone and w.state != "stopped"}
        live = {slot for slot, (wid, _) in self.started.items() if wid in ids}
        joined = {w.id for w in workers if self.owns(w)}
        live |= {slot for slot, (wid, at) in self.started.items()
                 if wid not in joined and now - at < 4 * STARTUP}
        live |= {w.id.rpartition("-")[0] for w in workers if self.owns(w) and not w.gone
                 and w.state != "stopped"}  # started by an earlier daemon
        return live

    def prospects(self, workers: Sequence[WorkerInfo], now: float) -> list[Server]:
        """Each slot of the host (a GPU, or its CPU) with no live worker, when the
        host is connected and fit: ready after STARTUP."""
        from ..estimates import device_of
        from ..placement import Server

        status = self.status()
        if self._hub is None or self.problem or status is None:
            return []
        live = self._live(workers, now)
        out = []
        for slot in host_slots(self.host, status):
            if slot.name in live:
                continue
            gpu = slot.gpu
            worker = WorkerInfo(id=f"{slot.name} (to start)", name=self.host.name, kind="ssh",
                                host=self.host.address, pid=None, gpu=gpu is not None,
                                gpu_name=gpu.name if gpu else None, state="idle", job_id=None,
                                attempt=None, last_seen=now, gone=False, hub=self.name)
            out.append(Server(key=worker.id, place=self.name, worker=worker, live=False,
                              device=device_of("ssh", worker.gpu, worker.gpu_name),
                              ready_in=STARTUP, startup=STARTUP, remote=True))
        return out

    def want(self, servers: Sequence[str]) -> None:
        self.wanted = {s.removesuffix(" (to start)") for s in servers}

    # ---- workers ------------------------------------------------------------------

    def start_workers(self, waiting: frozenset[str], workers: Sequence[WorkerInfo]) -> None:
        """Start the workers the plan wants (all the host's slots when jobs wait
        ``--on`` this host); a failure is a problem of the host (jobs wait)."""
        now = time.time()
        status = self.status()
        if self._hub is None or self.problem or status is None:
            return
        slots = host_slots(self.host, status)
        want = {s.name for s in slots} if self.name in waiting else set(self.wanted)
        live = self._live(workers, now)
        todo = [s for s in slots if s.name in want and s.name not in live]
        if not todo:
            return
        try:
            folder = self.install(status)
            for slot in todo:
                self.spawn(slot, status, folder)
        except OrchError as exc:
            self._set_problem(f"host {self.host.name}: cannot start a worker: {exc}")
            self._hub = None
        self.wanted -= {s.name for s in todo}

    def install(self, status: HostStatus) -> str:
        """This orch on the host (once per content) and the project's key; the
        folder to put on PYTHONPATH. Idempotent."""
        from ..identity import load_identity
        from .colab_notebook import build_wheel

        _, wheel = build_wheel()
        sha = hashlib.sha256(wheel).hexdigest()[:16]
        folder = f"{status.home}/orch-{sha}"
        if self.installed == folder:
            return folder
        key = load_identity(self.project.state_dir).key

        def put(sftp: object) -> bool:
            import stat as st

            try:
                if st.S_ISDIR(sftp.stat(folder).st_mode or 0):  # type: ignore[attr-defined]
                    new = False
                else:
                    new = True
            except OSError:
                new = True
            if new:
                with sftp.open(f"{folder}.whl", "wb") as f:  # type: ignore[attr-defined]
                    f.write(wheel)
            with sftp.open(f"{status.home}/key", "w") as f:  # type: ignore[attr-defined]
                f.chmod(0o600)
                f.write(key)
            return new

        if self.link.call("installing orch", put):
            py = shlex.quote(self.host.python)
            code, out, err = self.link.run(
                f"{py} -c {shlex.quote(UNPACK)} {shlex.quote(folder + '.whl')} "
                f"{shlex.quote(folder)} && rm -f {shlex.quote(folder + '.whl')}", timeout=120)
            if code != 0:
                raise OrchError(f"cannot unpack orch in {folder}: {(err or out).strip()[-200:]}")
            log.info("installed orch on host %s in %s", self.host.name, folder)
        self.installed = folder
        return folder

    def spawn(self, slot: Slot, status: HostStatus, folder: str) -> None:
        """Start one worker, detached from this SSH session."""
        import secrets

        s = self.project.settings
        home = status.home
        wid = f"{slot.name}-{secrets.token_hex(3)}"
        args = ["-m", "orchestrator.worker", "--hub", f"{home}/hub", "--kind", "ssh",
                "--name", self.host.name, "--id", wid, "--work-dir", f"{home}/work",
                "--key-file", f"{home}/key", "--idle-timeout", str(s.worker_idle_timeout),
                "--heartbeat", str(s.heartbeat_interval)]
        if slot.gpu is not None:
            jobs = (s.gpu_jobs or 4) if slot.gpu.memory_mb else 1
            args += ["--gpu", slot.gpu.index, "--gpu-name", slot.gpu.name, "--slots", str(jobs)]
            if slot.gpu.memory_mb:
                args += ["--gpu-mem", str(slot.gpu.memory_mb)]
        # only the worker goes to the background, with no tie to this session's pipes
        command = (f"mkdir -p {shlex.quote(home + '/logs')} && cd {shlex.quote(home)} || exit 1\n"
                   f"PYTHONPATH={shlex.quote(folder)} setsid nohup "
                   f"{shlex.quote(self.host.python)} {shlex.join(args)} "
                   f"> {shlex.quote(f'{home}/logs/worker-{slot.name}.log')} 2>&1 < /dev/null &\n"
                   "echo $!")
        code, out, err = self.link.run(command, timeout=30)
        if code != 0:
            raise OrchError(f"the worker did not start: {(err or out).strip()[-200:]}")
        self.started[slot.name] = (wid, time.time())
        log.info("started worker %s on host %s (pid %s)", wid, self.host.name, out.strip())

    def kill(self, worker: WorkerInfo, run_pids: Sequence[int]) -> list[str]:
        """SIGKILL a worker that lost its lease, and its runs, if the host answers
        (a rebooted host has nothing left to kill)."""
        if not worker.pid or self._hub is None or worker.state == "stopped":
            return []
        targets = " ".join([f"-{int(p)}" for p in run_pids] + [str(int(worker.pid))])
        try:
            self.link.run(f"kill -9 -- {targets} 2>/dev/null; true", timeout=20)
        except OrchError as exc:
            log.info("could not reach host %s to stop %s: %s", self.host.name, worker.id, exc)
            return []
        return [f"killed what was left of worker {worker.id} on host {self.host.name}"]

    def stop_workers(self) -> None:
        """At the daemon's exit: SIGTERM the workers it started (idle ones exit, busy
        ones finish their job first). Best effort: an unreachable host is left be."""
        ids = [wid for wid, _ in self.started.values()]
        if not ids or self._hub is None or not self.link.up:
            return
        pattern = "|".join(ids)
        try:
            self.link.run(f"pkill -TERM -f -- {shlex.quote('--id (' + pattern + ')')}; true",
                          timeout=10)
        except OrchError as exc:
            log.info("could not stop the workers on host %s: %s", self.host.name, exc)
        finally:
            self.link.close()


def open_host_hub(project: Project, host: Host) -> Hub:
    """The hub of ``host`` over a new connection (for `orch pull` and the like):
    its folder from the last probe, else found by probing now."""
    from ..hubs.sftp import SftpHub
    from ..ssh import HostLink

    hosts = Hosts(project.state_dir)
    link = HostLink(host, hosts.known_hosts)
    status = hosts.status(host.name)
    if status is None or not status.home:
        status = probe(link, 0.0)
        hosts.save_status(status)
    if not status.home:
        from ..errors import HubError

        raise HubError(status.problem or f"host {host.name}: its folder is not known")
    return SftpHub(link, f"{status.home}/hub")
