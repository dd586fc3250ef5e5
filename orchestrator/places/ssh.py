"""SSH hosts as places: one place per host of `orch hosts add`.

The host's hub is a folder in its private ``workdir`` (``WORKDIR/hub``): workers
there use it as a plain folder hub; the daemon reads and writes it over SFTP
(:class:`~orchestrator.hubs.sftp.SftpHub`). The place:

- connects (in a thread, every ``host_retry`` seconds while the host is away),
  probes the host (:mod:`.ssh_setup`: its Python, TensorFlow, GPUs, free disk; the
  result in ``.orch/host-status/NAME.json``) and gives the daemon the hub;
- installs orch there (:func:`.ssh_setup.install`) and starts one worker per GPU
  (the CPU when the host has none) detached from the SSH session: it outlives a
  dropped connection and exits after ``worker_idle_timeout`` idle;
- kills a worker that lost its lease, by its id, when the host can be reached.

A host with a problem (cannot be reached or signed in to, no Python 3.11, no
TensorFlow, too little disk, workers that never join) takes no work; the problem is
logged once, kept in its status file (`orch hosts list` shows it) and named by
`orch submit`.
"""

from __future__ import annotations

import secrets
import shlex
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..config import Project
from ..errors import OrchError
from ..hosts import Host, Hosts, HostStatus, Slot, host_slots
from ..logs import get_logger
from ..models import WorkerInfo
from . import Availability, Place
from .ssh_setup import install, log_tail, probe, worker_command

if TYPE_CHECKING:
    from ..hubs.base import Hub
    from ..placement import Server
    from ..ssh import HostLink
    from . import Placeable

log = get_logger(__name__)
STARTUP = 15.0  # seconds from asking a host for a worker to its first heartbeat
PROBE_DEADLINE = 180.0  # a probe hanging longer is cut off (its connection closed)
GIVE_UP = 3  # workers started that never joined, before the host is marked as a problem


class SshPlace(Place):
    """One SSH host: its hub, its workers."""

    brings_hub = True

    def __init__(self, project: Project, host: Host) -> None:
        self.project = project
        self.host = host
        self.config = host
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
        self.never_joined = 0  # workers started in a row that never joined
        self.seen_join: set[str] = set()  # workers started here that joined

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
                if now - self.tried > PROBE_DEADLINE:  # the host stopped answering
                    log.warning("host %s does not answer; closing its connection",
                                self.host.name)
                    self.link.abort()
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
        """The probe thread: its outcome, never an exception (said in one line)."""
        try:
            self._probed = probe(self.link, self.project.settings.host_min_free_mb)
        except OrchError as exc:
            self._probed = exc
        except Exception as exc:  # noqa: BLE001 - whatever stops it is the host's problem
            self._probed = OrchError(f"host {self.host.name}: cannot check it: "
                                     f"{type(exc).__name__}: {exc}")

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
        """The host's own workers (Ray workers may share its hub: a cluster's place
        owns those)."""
        return worker.hub == self.name and worker.kind != "ray"

    def can_run(self, job: Placeable) -> bool:
        return job.target in ("auto", "remote", self.name)

    def how_soon(self, job: Placeable, workers: Sequence[WorkerInfo]) -> Availability:
        status = self.status()
        return self.daemon_starts(job, workers, status.problem if status else "",
                                  bool(status.gpus) if status else None, STARTUP,
                                  f"host {self.host.name}")

    def _live(self, workers: Sequence[WorkerInfo], now: float) -> set[str]:
        """Slots with a live worker (its id is ``SLOT-xxxxxx``, whichever daemon started
        it), or one started lately that has not joined yet."""
        live = {w.id.rpartition("-")[0] for w in workers if self.owns(w) and not w.gone
                and w.state != "stopped"}
        joined = {w.id for w in workers if self.owns(w)}
        return live | {slot for slot, (wid, at) in self.started.items()
                       if wid not in joined and now - at < 4 * STARTUP}

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

    def start_workers(self, waiting: Mapping[str, int], workers: Sequence[WorkerInfo]) -> None:
        """Start the workers the plan wants (all the host's slots when jobs wait
        ``--on`` this host). A failure, or GIVE_UP workers in a row that never
        joined, is a problem of the host (its jobs wait; tried again later)."""
        now = time.time()
        status = self.status()
        if self._hub is None or self.problem or status is None:
            return
        slots = host_slots(self.host, status)
        self._forget_lost_starts(workers, now, status, slots)
        if self.problem:
            return
        want = {s.name for s in slots} if self.name in waiting else set(self.wanted)
        live = self._live(workers, now)
        todo = [s for s in slots if s.name in want and s.name not in live]
        if not todo:
            return
        try:
            if not self.installed:
                from ..identity import load_identity

                self.installed = install(self.link, status.home,
                                         load_identity(self.project.state_dir).key)
            for slot in todo:
                self.spawn(slot, status, self.installed)
        except OrchError as exc:
            self._set_problem(f"host {self.host.name}: cannot start a worker: {exc}")
            self._hub = None
        self.wanted -= {s.name for s in todo}

    def _forget_lost_starts(self, workers: Sequence[WorkerInfo], now: float,
                            status: HostStatus, slots: list[Slot]) -> None:
        """Workers started that never joined (within 4 × STARTUP) are forgotten, so
        the slot may be started again; after GIVE_UP in a row, the host has a problem
        naming the tail of the worker's log."""
        joined = {w.id for w in workers if self.owns(w)}
        for slot, (wid, at) in list(self.started.items()):
            if wid in joined:
                if wid not in self.seen_join:
                    self.seen_join.add(wid)
                    self.never_joined = 0
            elif now - at >= 4 * STARTUP:
                del self.started[slot]
                self.never_joined += 1
                if self.never_joined >= GIVE_UP:
                    self.never_joined = 0
                    tail = log_tail(self.link, status.home,
                                    next(s for s in slots if s.name == slot))
                    self._set_problem(f"host {self.host.name}: the workers started there "
                                      f"never joined (their log: {tail or 'empty'})")
                    self._hub = None
                    return

    def spawn(self, slot: Slot, status: HostStatus, folder: str) -> None:
        """Start one worker, detached from this SSH session. Not retried after a
        dropped connection: it might have started (the slot is tried again once its
        worker has not joined in time)."""
        wid = f"{slot.name}-{secrets.token_hex(3)}"
        self.started[slot.name] = (wid, time.time())
        code, out, err = self.link.run(
            worker_command(self.host, status.home, folder, slot, wid, self.project.settings),
            timeout=30, retry=False)
        if code != 0:
            raise OrchError(f"the worker did not start: {(err or out).strip()[-200:]}")
        log.info("started worker %s on host %s (pid %s)", wid, self.host.name, out.strip())

    def kill(self, worker: WorkerInfo, run_pids: Sequence[int]) -> list[str]:
        """SIGKILL what is left of a worker that lost its lease, found by its id (not
        by pid: after a reboot a pid may be another process's). Its runs die with it
        (they are started with PR_SET_PDEATHSIG). Nothing when the host is away."""
        if self._hub is None or worker.state == "stopped":
            return []
        try:
            code, _, _ = self.link.run(
                f"pkill -9 -f -- {shlex.quote(f'--id {worker.id}( |$)')}", timeout=20)
        except OrchError as exc:
            log.info("could not reach host %s to stop %s: %s", self.host.name, worker.id, exc)
            return []
        return [f"killed what was left of worker {worker.id} on host {self.host.name}"] \
            if code == 0 else []

    def stop_workers(self) -> None:
        """At the daemon's exit (or when the host is removed): SIGTERM the workers it
        started (idle ones exit, busy ones finish their job first), then close the
        connection. Best effort: a host that is away is left be."""
        ids = [wid for wid, _ in self.started.values()]
        try:
            if ids and self._hub is not None and self.link.up:
                pattern = f"--id ({'|'.join(ids)})( |$)"
                self.link.run(f"pkill -TERM -f -- {shlex.quote(pattern)}; true", timeout=10)
        except OrchError as exc:
            log.info("could not stop the workers on host %s: %s", self.host.name, exc)
        finally:
            if self._probing is None or not self._probing.is_alive():
                self.link.close()
            else:
                self.link.abort()


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
