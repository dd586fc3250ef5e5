"""The local place: worker processes on this machine, one per GPU that
``nvidia-smi`` lists plus CPU slots (``local_slots``), kept alive by the daemon
while there is local work.

A slot's worker that loses its lease while its process lives (stopped, hung) is
killed, with its runs, before its jobs are re-queued (:meth:`LocalPlace.kill`): a
stale run never trains beside the next attempt. ``nvidia-smi`` runs only when the
GPUs are asked for.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from ..config import Project
from ..logs import get_logger
from ..models import GpuNeed, WorkerInfo
from ..procgroup import pid_alive
from . import Availability, Place

if TYPE_CHECKING:
    import subprocess

    from ..placement import Server
    from . import Placeable

log = get_logger(__name__)
TARGETS = ("local", "auto")
LOCAL_STARTUP = 3.0  # seconds for the daemon to start a local worker
DEFAULT_GPU_JOBS = 4  # jobs a local GPU runs at once, at most, while their memory fits


@cache
def this_host() -> str:
    import socket

    return socket.gethostname()


@dataclass(frozen=True)
class Slot:
    """One local worker the daemon keeps alive: a GPU (shared by up to ``jobs`` jobs
    at once, packed by memory), or a CPU slot."""

    name: str
    gpu: str | None = None
    gpu_name: str | None = None
    gpu_mem_mb: float | None = None
    jobs: int = 1


def detect_gpus() -> list[tuple[str, str, float | None]]:
    """``[(index, name, memory MB)]`` from ``nvidia-smi``; empty without NVIDIA GPUs."""
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus: list[tuple[str, str, float | None]] = []
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            try:
                memory: float | None = float(parts[2])
            except ValueError:
                memory = None
            gpus.append((parts[0], parts[1], memory))
    return gpus


def local_slots(project: Project) -> list[Slot]:
    setting = project.settings.gpus.strip().lower()
    if setting == "none":
        gpus: list[tuple[str, str, float | None]] = []
    elif setting == "auto":
        gpus = detect_gpus()
    else:
        found = {i: (name, mem) for i, name, mem in detect_gpus()}
        gpus = [(i, *found.get(i, (f"GPU {i}", None))) for i in
                (x.strip() for x in setting.split(",")) if i]
    share = project.settings.gpu_jobs or DEFAULT_GPU_JOBS
    # a GPU whose memory is not known runs one job at a time (nothing to pack into)
    slots = [Slot(f"local-gpu{i}", gpu=i, gpu_name=name, gpu_mem_mb=mem,
                  jobs=share if mem else 1) for i, name, mem in gpus]
    cpus = project.settings.local_slots
    if cpus is None:
        cpus = 0 if gpus else 1
    slots += [Slot(f"local-cpu{i}") for i in range(cpus)]
    return slots


class LocalPlace(Place):
    """Worker processes on this machine, one per slot. Slots are detected on first use."""

    name = "local"

    def __init__(self, project: Project) -> None:
        self.project = project
        self._slots: list[Slot] | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.retired: list[subprocess.Popen[bytes]] = []  # replaced, still to be reaped

    @property
    def slots(self) -> list[Slot]:
        if self._slots is None:
            self._slots = local_slots(self.project)
        return self._slots

    def owns(self, worker: WorkerInfo) -> bool:
        return worker.kind == "local"

    def can_run(self, job: Placeable) -> bool:
        return job.target in TARGETS  # a GPU job may wait for a GPU worker started by hand

    def how_soon(self, job: Placeable, workers: Sequence[WorkerInfo]) -> Availability:
        now = self.fitting(job, workers)
        if now is not None:
            return now
        if self.could_start(job):
            return Availability(self.name, 2.0, "the daemon starts a local worker")
        if job.gpu is GpuNeed.REQUIRED:
            why = ("warning: no local GPU found (nvidia-smi); the job waits for a GPU worker "
                   "(`orch worker --hub .orch/hub --gpu 0`)")
        else:
            why = ("warning: local_slots is 0 and GPUs are off; the job waits for a worker "
                   "(`orch worker --hub .orch/hub`)")
        return Availability(self.name, None, why)

    def prospects(self, workers: Sequence[WorkerInfo], now: float) -> list[Server]:
        """Each slot with no live worker: the daemon starts one in a couple of seconds."""
        from ..estimates import device_of
        from ..placement import Server

        live = {w.name for w in workers if self.owns(w) and not w.gone and w.host == this_host()
                and w.state != "stopped"}
        out = []
        for slot in self.slots:
            if slot.name in live:
                continue
            worker = WorkerInfo(id=f"{slot.name} (to start)", name=slot.name, kind="local",
                                host=this_host(), pid=None, gpu=slot.gpu is not None,
                                gpu_name=slot.gpu_name, state="idle", job_id=None, attempt=None,
                                last_seen=now, gone=False)
            out.append(Server(key=worker.id, place=self.name, worker=worker, live=False,
                              device=device_of("local", worker.gpu, slot.gpu_name),
                              ready_in=LOCAL_STARTUP, startup=LOCAL_STARTUP))
        return out

    def could_start(self, job: Placeable) -> bool:
        """Whether a slot fits ``job`` (GPUs are detected only for a GPU job)."""
        if job.gpu is not GpuNeed.REQUIRED and self.project.settings.local_slots != 0:
            return True  # a CPU slot, or (local_slots unset) the GPU slot that replaces it
        return any(job.gpu is not GpuNeed.REQUIRED or s.gpu is not None for s in self.slots)

    # ---- worker processes (the daemon's side) -------------------------------------

    def kill(self, worker: WorkerInfo, run_pids: Sequence[int]) -> list[str]:
        """SIGKILL a worker of this machine and its runs' process groups, and wait
        (up to 10 s) until they are gone. A run also dies with its worker
        (PR_SET_PDEATHSIG); killing its group too covers what it started."""
        import signal
        import time

        if worker.host != this_host() or not worker.pid:
            return []
        done = []
        for pid, what, group in [(p, "run", True) for p in run_pids] + [
                (worker.pid, "worker", False)]:
            try:
                (os.killpg if group else os.kill)(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
            done.append(f"killed the {what} process {pid} of {worker.id} on this machine")
        deadline = time.monotonic() + 10
        for pid in [*run_pids, worker.pid]:
            while pid_alive(pid) and time.monotonic() < deadline:
                self._reap(pid)
                time.sleep(0.05)
        return done

    def _reap(self, pid: int) -> None:
        """Collect a killed child of the daemon (else it lingers as a zombie)."""
        for proc in [*self.procs.values(), *self.retired]:
            if proc.pid == pid:
                proc.poll()
                return

    def alive(self, worker: WorkerInfo) -> bool | None:
        """Local workers: is the process there? Others: unknown (the lease decides)."""
        if worker.host != this_host() or not worker.pid:
            return None
        proc = self.procs.get(worker.name)
        if proc is not None and proc.pid == worker.pid:
            return proc.poll() is None
        return pid_alive(worker.pid)

    def start_workers(self, waiting: Mapping[str, int], workers: Sequence[WorkerInfo]) -> None:
        """Reap exited workers, retire the ones whose lease expired, and start a worker
        per free slot while local work waits (``waiting``: the queued jobs' targets)."""
        gone = {w.pid for w in workers if w.gone and w.kind == "local" and w.host == this_host()}
        for name, proc in list(self.procs.items()):
            if proc.poll() is not None:
                log.info("local worker %s exited (%s)", name, proc.returncode)
                del self.procs[name]
            elif proc.pid in gone:  # lease expired while the process lives (stopped, hung)
                log.warning("local worker %s (pid %d) lost its lease; replacing it", name,
                            proc.pid)
                self.retired.append(self.procs.pop(name))
        self.retired = [p for p in self.retired if p.poll() is None]
        if not waiting.keys() & set(TARGETS):
            return
        live = {w.name for w in workers if self.owns(w) and not w.gone and w.host == this_host()
                and w.state != "stopped" and w.pid and pid_alive(w.pid)}
        for slot in self.slots:
            if slot.name not in self.procs and slot.name not in live:
                self.spawn(slot)

    def spawn(self, slot: Slot) -> None:
        import subprocess

        s = self.project.settings
        cmd = [
            sys.executable, "-m", "orchestrator.worker", "--hub", self.project.hub_url,
            "--name", slot.name, "--kind", "local", "--work-dir", str(self.project.work_dir),
            "--idle-timeout", str(s.worker_idle_timeout), "--heartbeat", str(s.heartbeat_interval),
        ]
        if slot.gpu is not None:
            cmd += ["--gpu", slot.gpu, "--gpu-name", slot.gpu_name or "",
                    "--slots", str(slot.jobs)]
            if slot.gpu_mem_mb:
                cmd += ["--gpu-mem", str(slot.gpu_mem_mb)]
        with open(self.project.logs_dir / f"worker-{slot.name}.log", "ab") as logf:
            self.procs[slot.name] = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.project.root,
            )
        log.info("started local worker %s (pid %d)", slot.name, self.procs[slot.name].pid)

    def running(self) -> bool:
        return any(p.poll() is None for p in self.procs.values())  # retired ones don't count

    def stop_workers(self) -> None:
        import signal

        for proc in [*self.procs.values(), *self.retired]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # idle workers exit; busy ones finish
