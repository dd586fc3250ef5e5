"""The daemon: one per project, in the background, the only scheduler.

Loop: wait for a hub change (watchdog) or ``tick_interval``, then run a scheduler
tick, pull sealed results (unless auto-pull is off), and keep local workers
running while there is work for them. Exits after ``daemon_idle_timeout`` with
nothing to do. One instance per project is guaranteed by an exclusive ``flock``
on ``.orch/daemon.lock``; ``.orch/daemon.pid`` tells the CLI whom to signal.

Crash safety: state lives in SQLite and the hub, not in this process. Restarted
after a ``kill -9``, it forgives the downtime (fresh leases), re-writes
half-done assignments, and picks up results sealed meanwhile; nothing that
finished runs again.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import shutil
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

from . import protocol as P
from .atomic import write_atomic
from .config import Project, open_project
from .errors import OrchError, is_disk_full
from .hubs import open_hub, project_hub
from .lifecycle import lock_path, mark_ready, pid_path, ready_path
from .models import ACTIVE, Job, WorkerInfo
from .places import CONFIG_FILES, Place, configured_places, project_places
from .pull import AutoPull
from .scheduler import Scheduler
from .store import Store

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, project: Project) -> None:
        self.project = project
        self.settings = project.settings
        self.store = Store(project.db_path)
        self.hub = open_hub(project.hub_url)
        self.scheduler = Scheduler(project, self.store, {"local": self.hub},
                                   ended=self.worker_ended, on_gone=self.worker_gone,
                                   places=project_places(project))
        self.places: list[Place] = self.scheduler.places  # the planner's too: one list
        self.places_seen = self.places_version()
        self.refused: dict[str, str] = {}  # places whose hub was refused, and why (said once)
        self.hubs = self.scheduler.hubs  # by name: "local", and "remote" once connected
        self.remote_error: str | None = None
        self.stopping = False
        self.pulls = AutoPull(project, self.store)
        self.trouble: str | None = None  # the error the last tick met, said once
        self.watcher = self.hub.watch()

    def owner(self, worker: WorkerInfo) -> Place | None:
        return next((place for place in self.places if place.owns(worker)), None)

    def worker_ended(self, worker: WorkerInfo) -> str | None:
        """Why a worker's process ended, if the place that owns it can tell."""
        place = self.owner(worker)
        return None if place is None else place.ended(worker)

    def worker_gone(self, worker: WorkerInfo, jobs: list[Job]) -> None:
        """A worker lost its lease: before its jobs are re-queued, the place that owns
        it stops what may still run of it (a stopped or hung local process)."""
        place = self.owner(worker)
        if place is None:
            return
        pids = []
        hub = self.hubs.get(worker.hub)
        for job in jobs:
            try:
                status = hub.get_doc(P.status(job.id, job.attempt), P.RunStatus) if hub else None
            except OrchError:
                status = None
            if status is not None and status.pid:
                pids.append(status.pid)
        for line in place.kill(worker, pids):
            log.info("%s", line)
            for job in jobs:
                self.store.note(job.id, f"{line}, before re-queueing")

    def supervise(self) -> None:
        """Let each place start (or retire) its workers for the work waiting."""
        waiting = {} if self.stopping else self.store.queued_targets()
        workers = self.store.workers(include_gone=True)
        for place in self.places:
            place.start_workers(waiting, workers)

    # ---- loop -----------------------------------------------------------------

    def busy(self) -> bool:
        return self.store.has_jobs(ACTIVE) or (self.settings.auto_pull
                                               and self.pulls.waiting() > 0)

    def connect_remote(self) -> None:
        """Open the project's remote hub (Drive) if configured and not open yet. A
        failure is logged once and retried next tick: local work goes on."""
        if not self.settings.hub or "remote" in self.hubs:
            return
        try:
            self.scheduler.add_hub("remote", project_hub(self.project, "remote"))
        except OrchError as exc:
            if str(exc) != self.remote_error:
                log.error("remote hub %s unavailable: %s", self.project.remote_hub_url, exc)
            self.remote_error = str(exc)
            return
        log.info("remote hub %s connected", self.project.remote_hub_url)
        self.remote_error = None

    def places_version(self) -> tuple[tuple[int, int] | None, ...]:
        """The configured places' files (hosts, clusters), by size and mtime."""
        out: list[tuple[int, int] | None] = []
        for name in CONFIG_FILES:
            try:
                st = (self.project.state_dir / name).stat()
            except OSError:
                out.append(None)
            else:
                out.append((st.st_mtime_ns, st.st_size))
        return tuple(out)

    def reload_places(self) -> None:
        """`orch hosts add/remove` or `orch clusters add/remove` while the daemon
        runs: rebuild the configured places (one whose host or cluster is unchanged
        is kept, with its connection); a removed one's hub is dropped, its jobs wait.
        The built-in places (local, Colab) do not depend on those files."""
        version = self.places_version()
        if version == self.places_seen:
            return
        self.places_seen = version
        old = {(type(p), p.config): p for p in self.places if p.config is not None}
        configured = [old.pop((type(p), p.config), p) for p in configured_places(self.project)]
        for gone in old.values():
            gone.stop_workers()
            self.scheduler.drop_hub(gone.name)
        self.places[:] = [p for p in self.places if p.config is None] + configured
        log.info("places now: %s", ", ".join(p.name for p in self.places))

    def connect_places(self) -> None:
        """Serve the hubs that places bring (SSH hosts) while they can be reached:
        one that cannot is dropped (its jobs wait; their leases hold, up to
        ``unreachable_lease_ttl``) and comes back when the place reconnects."""
        now = time.time()
        for place in self.places:
            if not place.brings_hub:
                continue
            try:
                hub = place.connect_hub(now)
            except OrchError as exc:
                log.error("%s: %s", place.name, exc)
                hub = None
            if hub is None and place.name in self.hubs:
                self.scheduler.drop_hub(place.name)
            elif hub is not None and self.hubs.get(place.name) is not hub:
                try:
                    self.scheduler.add_hub(place.name, hub)
                except OrchError as exc:
                    if self.refused.get(place.name) != str(exc):
                        log.error("%s: hub %s refused: %s", place.name, hub.url, exc)
                    self.refused[place.name] = str(exc)
                else:
                    self.refused.pop(place.name, None)

    def step(self) -> None:
        self.connect_remote()
        self.reload_places()
        self.connect_places()
        self.scheduler.tick()
        if self.settings.auto_pull:
            self.pulls.run(self.hubs, time.monotonic())
        self.supervise()

    def safe_step(self) -> float:
        """One step that never ends the daemon over a fault it can outlive (a hub
        error, a full disk, a busy database): it says so once and tries again,
        backing off. Returns how long to wait before the next step."""
        try:
            self.step()
        except (OrchError, OSError, sqlite3.OperationalError) as exc:
            what = _describe(exc)
            if what != self.trouble:
                log.error("tick failed: %s; trying again", what)
            self.trouble = what
            return min(30.0, max(self.settings.tick_interval, 5.0))
        if self.trouble is not None:
            log.info("recovered: %s is over", self.trouble)
            self.trouble = None
        return self.settings.tick_interval

    def poke(self) -> None:
        """Tick now (signal handlers call this: it only sets an event)."""
        self.watcher.notify()

    def clean_leftovers(self, older_than: float = 600.0) -> None:
        """What killed processes and full disks left in ``.orch/`` (temporary files,
        pull staging folders, the scratch folders of workers that are gone), older
        than ``older_than`` seconds so that nothing still being written is touched."""
        from .atomic import clean_stale
        from .places.local import this_host
        from .procgroup import pid_alive

        removed = clean_stale(self.project.state_dir, older_than)
        cutoff = time.time() - older_than
        live = {w.id for w in self.store.workers() if w.host == this_host() and w.pid
                and pid_alive(w.pid)}
        folders = [*(self.project.state_dir / "staging").glob("*"),
                   *(p for p in self.project.work_dir.glob("*") if p.name not in live
                     and p.name != "blobs")]
        for folder in folders:
            try:
                if folder.is_dir() and folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
            except OSError:
                continue
        if removed:
            log.info("cleaned %d leftover(s) of earlier runs from %s", removed,
                     self.project.state_dir)

    def run(self) -> None:
        watcher = self.watcher
        self.clean_leftovers()
        self.connect_remote()  # before recovery: jobs assigned on Drive are recovered too
        self.connect_places()
        self.scheduler.recover()
        idle_since = time.monotonic()
        log.info("daemon up for %s (pid %d; places: %s)", self.project.root, os.getpid(),
                 ", ".join(p.name for p in self.places))
        ready = False
        try:
            while not self.stopping:
                pause = self.safe_step()
                if not ready:  # the store now knows the hubs' live workers
                    mark_ready(self.project)
                    ready = True
                try:
                    busy = self.busy() or any(p.running() for p in self.places)
                except sqlite3.OperationalError:
                    busy = True
                if busy or self.trouble:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > self.settings.daemon_idle_timeout:
                    log.info("idle for %.0f s; exiting", self.settings.daemon_idle_timeout)
                    break
                watcher.wait(pause)
        finally:
            watcher.close()
            for place in self.places:
                place.stop_workers()
            self.store.close()


def _describe(exc: BaseException) -> str:
    """One line for a fault of a tick: a full disk is named as such."""
    if is_disk_full(exc) or "disk is full" in str(exc):
        return f"the disk is full ({exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orch daemon")
    parser.add_argument("--project", default=".")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s daemon %(message)s")
    try:
        project = open_project(Path(args.project), create=True)
    except OrchError as exc:
        print(f"orch daemon: error: {exc}", file=sys.stderr)
        return exc.exit_code
    # Installed before the lock is taken: whoever sees the lock held may poke us.
    woken = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: woken.set())
    fd = os.open(lock_path(project), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("another daemon is running for %s", project.root)
        return 0
    pid_file = pid_path(project)
    write_atomic(pid_file, str(os.getpid()))
    daemon = Daemon(project)

    def on_term(*_: object) -> None:
        daemon.stopping = True
        daemon.poke()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGUSR1, lambda *_: daemon.poke())
    if woken.is_set():
        daemon.poke()
    try:
        daemon.run()
    finally:
        pid_file.unlink(missing_ok=True)
        ready_path(project).unlink(missing_ok=True)
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
