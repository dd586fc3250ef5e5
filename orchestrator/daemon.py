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
import signal
import sys
import threading
import time
from pathlib import Path

from .config import Project, open_project
from .errors import OrchError, PullError
from .hubs import open_hub, project_hub
from .lifecycle import lock_path, pid_path
from .models import ACTIVE, JobState, WorkerInfo
from .places import Place, project_places
from .pull import pull_job
from .scheduler import Scheduler
from .store import Store

log = logging.getLogger(__name__)
S = JobState


class Daemon:
    def __init__(self, project: Project) -> None:
        self.project = project
        self.settings = project.settings
        self.store = Store(project.db_path)
        self.hub = open_hub(project.hub_url)
        self.places: list[Place] = project_places(project)
        self.scheduler = Scheduler(project, self.store, {"local": self.hub},
                                   alive=self.worker_alive)
        self.hubs = self.scheduler.hubs  # by name: "local", and "remote" once connected
        self.remote_error: str | None = None
        self.stopping = False
        self.pull_failed: set[tuple[str, int]] = set()
        self.watcher = self.hub.watch()

    def worker_alive(self, worker: WorkerInfo) -> bool | None:
        """Whether a worker's process lives, if the place that owns it can tell."""
        for place in self.places:
            if place.owns(worker):
                return place.alive(worker)
        return None

    def supervise(self) -> None:
        """Let each place start (or retire) its workers for the work waiting."""
        waiting = [] if self.stopping else self.store.queued()
        workers = self.store.workers(include_gone=True)
        for place in self.places:
            place.start_workers(waiting, workers)

    # ---- pulls ----------------------------------------------------------------

    def pull_ready(self) -> None:
        if not self.settings.auto_pull:
            return
        for job in self.store.jobs([S.SUCCEEDED]):
            if (job.id, job.attempt) in self.pull_failed:
                continue
            hub = self.hubs.get(job.hub)
            if hub is None:
                continue
            try:
                pull_job(self.project, self.store, hub, job)
            except PullError as exc:
                self.pull_failed.add((job.id, job.attempt))
                self.store.update(job.id, error=f"pull failed: {exc}")
                self.store.note(job.id, f"auto-pull failed: {exc}")
                log.error("%s", exc)

    # ---- loop -----------------------------------------------------------------

    def busy(self) -> bool:
        counts = self.store.counts()
        waiting = sum(counts.get(s, 0) for s in ACTIVE)
        unpulled = counts.get(S.SUCCEEDED, 0) if self.settings.auto_pull else 0
        return waiting + unpulled - len(self.pull_failed) > 0

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

    def step(self) -> None:
        self.connect_remote()
        self.scheduler.tick()
        self.pull_ready()
        self.supervise()

    def poke(self) -> None:
        """Tick now (signal handlers call this: it only sets an event)."""
        self.watcher.notify()

    def run(self) -> None:
        watcher = self.watcher
        self.connect_remote()  # before recovery: jobs assigned on Drive are recovered too
        self.scheduler.recover()
        idle_since = time.monotonic()
        log.info("daemon up for %s (pid %d; places: %s)", self.project.root, os.getpid(),
                 ", ".join(p.name for p in self.places))
        try:
            while not self.stopping:
                try:
                    self.step()
                except OrchError as exc:
                    log.error("tick failed: %s", exc)
                if self.busy() or any(p.running() for p in self.places):
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > self.settings.daemon_idle_timeout:
                    log.info("idle for %.0f s; exiting", self.settings.daemon_idle_timeout)
                    break
                watcher.wait(self.settings.tick_interval)
        finally:
            watcher.close()
            for place in self.places:
                place.stop_workers()
            self.store.close()


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
    tmp = pid_file.with_suffix(".partial")
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, pid_file)
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
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
