"""The worker: one program for every place that trains (local, Colab, SSH host).

It heartbeats into the hub, takes the assignments the daemon writes into its
inbox, runs each job's script in a subprocess, forwards progress, checkpoints and
logs, and seals the result (``result.json`` is written last). It imports only the
standard library and orch's hub code, so it starts fast and runs anywhere.

Writes, per the protocol: its heartbeat; for the attempts it was given, their
status, log, metrics, checkpoint and result. A worker whose assignment has been
withdrawn (lease expired: the job now runs as a newer attempt) kills its run and
writes nothing more for it. Signals: SIGTERM finishes the current job then exits;
SIGINT stops the run at once (the daemon re-queues it).

Outages (:mod:`.outage`): a worker rides out a hub that does not answer (Drive down,
a token refresh failing, sign-in lapsed): idle, it keeps polling with capped backoff
and survives any error in its loop; running, its script trains on and what it would
send waits (see :mod:`.run`), for as long as its lease could still be valid. One log
line says when the hub went away, one when it came back.

Usage: ``python -m orchestrator.worker --hub PATH [--name N] [--burst]``.
"""

from __future__ import annotations

import logging
import os
import platform
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from . import __version__
from . import protocol as P
from .errors import HubError, HubFullError, LeaseLapsedError, OrchError, SupersededError, UsageError
from .hubs import Hub, open_hub, read_hub_info
from .outage import OUTAGE_ERRORS, Outage, lease_seconds
from .pacing import IdlePace
from .run import AttemptRun
from .sessions import session_start
from .signing import NO_KEY, load_key, verify
from .worker_config import WorkerConfig, hub_folder, parse_args

log = logging.getLogger(__name__)

T = TypeVar("T")

#: tries of one Drive request before the worker's own backoff takes over (a short
#: budget keeps the run's watch loop and the heartbeat responsive during an outage)
HUB_RETRIES = 3


class Worker:
    def __init__(self, cfg: WorkerConfig, hub: Hub | None = None) -> None:
        wid = cfg.worker_id or f"{cfg.name}-{secrets.token_hex(3)}"
        self.cfg = cfg
        self.id = wid
        self.hub = hub or open_hub(cfg.hub, credentials=Path(cfg.credentials)
                                   if cfg.credentials else None,
                                   staleness=min(cfg.poll_interval, 2.0),
                                   retries=HUB_RETRIES)
        self.outage = Outage(self.hub.url, cap=cfg.retry_max)
        key = cfg.key or load_key(None, hub_folder(cfg.hub))
        if key is None:
            raise UsageError(NO_KEY)
        self.key = key
        self.work_dir = cfg.work_dir / wid
        self.started = time.time()
        self.session_started = session_start(cfg.session_start, cfg.session_hours, self.started)
        # whose session it is (Drive: one request), for a worker that lives in one
        self.account = cfg.account or (self.hub.account() if cfg.session_hours
                                       or cfg.kind == "colab" else None)
        self.deadline = (
            self.session_started + cfg.session_hours * 3600 if cfg.session_hours else None
        )
        self._seq = 0
        self._state = P.WorkerState.IDLE
        self._running: dict[tuple[str, int], threading.Thread] = {}
        self._progress: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._beating = threading.Lock()  # one heartbeat write at a time
        self._stop = threading.Event()  # finish current job, then exit
        self._abort = threading.Event()  # stop the run now
        self._done: set[tuple[str, int]] = set()  # assignments taken
        self._finished: set[str] = set()  # jobs whose attempt here ended
        self.jobs_run = 0
        self._loop_error: str | None = None  # the unexpected error the loop last met
        self._loop_tries = 0
        self._last_beat = 0.0
        self.pace = IdlePace(cfg.poll_interval, cfg.heartbeat_interval,
                             remote=hub_folder(cfg.hub) is None)

    # ---- heartbeat --------------------------------------------------------

    def capabilities(self) -> P.Capabilities:
        return P.Capabilities(
            kind=self.cfg.kind,
            gpu=self.cfg.gpu is not None,
            gpu_name=self.cfg.gpu_name,
            cuda_visible_devices=self.cfg.gpu,
            cpus=os.cpu_count(),
            heartbeat_interval=self.pace.beat_interval(self._state is P.WorkerState.IDLE),
            # relative, so the daemon's clock is the only one that matters
            session_left=None if self.deadline is None else self.deadline - time.time(),
            session_started=self.session_started,
            account=self.account,
            python=platform.python_version(),
            orch=__version__,
            slots=self.cfg.slots,
            gpu_mem_mb=self.cfg.gpu_mem_mb,
            only_job=self.cfg.only_job,
        )

    def beat(self) -> None:
        """Write a heartbeat (several threads beat: one at a time, so the hub never
        holds an older beat than the newest written)."""
        with self._beating:
            self._beat()

    def _beat(self) -> None:
        with self._lock:
            self._seq += 1
            self._last_beat = time.monotonic()
            running = sorted(self._running)
            first = running[0] if running else None
            doc = P.Heartbeat(
                worker_id=self.id, name=self.cfg.name, host=socket.gethostname(),
                pid=os.getpid(), seq=self._seq, state=self._state,
                job_id=first[0] if first else None, attempt=first[1] if first else None,
                running=tuple(P.RunRef(j, n) for j, n in running),
                progress=self._progress, capabilities=self.capabilities(),
                started=self.started, time=time.time(),
            )
        try:
            self.hub.put_doc(P.heartbeat(self.id), doc)
        except Exception as exc:  # noqa: BLE001 - the heartbeat thread must live on
            self.outage.failed(exc)
        else:
            self.outage.ok(beat=True)

    def _heartbeat_loop(self) -> None:
        # woken often, so a job taken while idle (slow beats) is reported at the busy
        # pace; while the hub is away, beats back off with the outage
        while not self._abort.wait(min(self.cfg.heartbeat_interval, 1.0)):
            if self._state is P.WorkerState.STOPPED:
                return
            idle = self._state is P.WorkerState.IDLE
            due = max(0.9 * self.pace.beat_interval(idle), self.outage.delay())
            if time.monotonic() - self._last_beat >= due:
                self.beat()

    def lease_of(self, assignment: P.Assignment | None) -> float:
        """Seconds the hub may be away before the daemon has surely re-queued this
        worker's job (see :func:`.outage.lease_seconds`)."""
        stated = assignment.lease_ttl if assignment else 0.0
        return lease_seconds(stated or self.cfg.lease_ttl or 0.0,
                             remote=not isinstance(hub_folder(self.cfg.hub), Path),
                             heartbeat=self.cfg.heartbeat_interval)

    def retry(self, fn: Callable[[], T], lease: float) -> T:
        """``fn()`` tried again through an outage (:meth:`.outage.Outage.retry`)."""
        return self.outage.retry(fn, lease, self._abort)

    def report_progress(self, progress: dict[str, Any]) -> None:
        """The running attempt's latest progress, for the next heartbeat."""
        with self._lock:
            self._progress = progress

    def aborting(self) -> bool:
        """Whether the worker was told to stop the run now (SIGINT)."""
        return self._abort.is_set()

    def _set(self, state: P.WorkerState) -> None:
        with self._lock:
            self._state = state
            if not self._running:
                self._progress = {}
        self.beat()

    # ---- main loop ----------------------------------------------------------

    def next_assignment(self) -> tuple[str, int] | None:
        """The oldest assignment in this worker's inbox not taken yet. A ``--job``
        worker takes only its job: another job's assignment (a daemon that assigned
        it anyway) is left alone, said once in the log; the daemon re-queues it when
        this worker is gone."""
        found = []
        for name in self.hub.list(P.inbox_dir(self.id)):
            parsed = P.parse_inbox_name(name)
            if parsed and parsed not in self._done:
                if self.cfg.only_job and parsed[0] != self.cfg.only_job:
                    self._done.add(parsed)
                    log.warning("refused assignment %s.%d: this worker runs only job %s",
                                parsed[0], parsed[1], self.cfg.only_job)
                    continue
                found.append(parsed)
        return min(found, key=lambda a: (a[1], a[0])) if found else None

    def wait_for_hub(self) -> None:
        """Check the hub speaks this worker's protocol (``hub.json``, written by the
        project's daemon). A hub not set up yet is waited for, up to the idle timeout;
        one of another protocol version is refused in one line."""
        deadline = time.monotonic() + (0 if self.cfg.burst else self.cfg.idle_timeout)
        said = False
        while not (self._stop.is_set() or self._abort.is_set()):
            try:
                if read_hub_info(self.hub) is not None:
                    return
            except OUTAGE_ERRORS as exc:  # away: wait for it (the deadline too)
                wait = self.outage.failed(exc)
                deadline = max(deadline, time.monotonic() + wait)
                self._stop.wait(wait)
                continue
            if time.monotonic() >= deadline:
                raise UsageError(f"the hub {self.hub.url} is not set up (no hub.json): start "
                                 "the project's daemon first (orch daemon start)")
            if not said:
                log.info("waiting for the project to set up the hub %s", self.hub.url)
                said = True
            self._stop.wait(self.cfg.poll_interval)

    def run(self) -> int:
        """Work until idle (or, with ``burst``, until the inbox is empty). Returns
        the number of jobs run."""
        self.wait_for_hub()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.beat()
        log.info("worker %s on hub %s (kind %s, gpu %s)", self.id, self.hub.url,
                 self.cfg.kind, self.cfg.gpu)
        hb = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        hb.start()
        idle_since = time.monotonic()
        try:
            while not (self._stop.is_set() or self._abort.is_set()):
                if self._reap():
                    idle_since = time.monotonic()
                    if self.cfg.only_job and self.cfg.only_job in self._finished:
                        break
                try:
                    assignment = self.next_assignment() \
                        if len(self._running) < self.cfg.slots else None
                except Exception as exc:  # noqa: BLE001 - an idle worker survives anything
                    self._loop_failed(exc)
                    idle_since = time.monotonic()  # time the hub is away is not idle time
                    continue
                if self._loop_error is not None:
                    log.warning("the worker's loop works again")
                    self._loop_error, self._loop_tries = None, 0
                if assignment is not None:
                    self._done.add(assignment)
                    self._launch(*assignment)
                    continue
                if not self._running:
                    if self.cfg.burst:
                        break
                    if time.monotonic() - idle_since > self.cfg.idle_timeout:
                        log.info("idle for %.0f s; exiting", self.cfg.idle_timeout)
                        break
                else:
                    idle_since = time.monotonic()
                self._stop.wait(self.pace.next_poll(idle=not self._running))
        finally:
            for thread in list(self._running.values()):  # a stop lets runs finish;
                thread.join()  # an abort (SIGINT) has them stop at once
            self._set(P.WorkerState.STOPPED)
            self._abort.set()
            hb.join(timeout=5)
            shutil.rmtree(self.work_dir, ignore_errors=True)
        return self.jobs_run

    def _loop_failed(self, exc: Exception) -> None:
        """The poll loop hit ``exc``: a hub error is an outage (:mod:`.outage`); any
        other is logged with its traceback once (until the loop works again or the
        error changes), then the worker waits the capped backoff and carries on."""
        if isinstance(exc, HubError):
            self._stop.wait(self.outage.failed(exc))
            return
        what = f"{type(exc).__name__}: {exc}"
        if what != self._loop_error:
            self._loop_error = what
            log.error("unexpected error in the worker's loop; it carries on, retrying every "
                      "%.0f s at most", self.cfg.retry_max, exc_info=exc)
        self._loop_tries += 1
        self._stop.wait(min(self.cfg.retry_max, 2.0 ** min(self._loop_tries - 1, 10)))

    def _launch(self, job_id: str, n: int) -> None:
        """Run attempt ``n`` of ``job_id`` in a thread of its own (the worker runs up to
        ``slots`` at once)."""
        thread = threading.Thread(target=self.run_attempt, args=(job_id, n),
                                  name=f"{job_id}.{n}", daemon=True)
        with self._lock:
            self._running[(job_id, n)] = thread
            self._state = P.WorkerState.BUSY
        thread.start()

    def _reap(self) -> bool:
        """Forget the runs that ended; True if one did."""
        with self._lock:
            ended = [key for key, t in self._running.items() if not t.is_alive()]
            for key in ended:
                del self._running[key]
            if ended and not self._running:
                self._state = P.WorkerState.IDLE
                self._progress = {}
        if ended:
            self.beat()
        return bool(ended)

    def request_stop(self, now: bool = False) -> None:
        (self._abort if now else self._stop).set()

    # ---- one attempt --------------------------------------------------------

    def assigned(self, job_id: str, n: int) -> P.Assignment | None:
        """The inbox file of ``job_id``.``n`` if it is a genuine assignment to this
        worker: signed with the project's key, naming this worker and that attempt.
        Anything else is refused with one line in the log, and nothing is written."""
        try:
            doc = self.retry(lambda: self.hub.get_doc(P.inbox(self.id, job_id, n),
                                                      P.Assignment), self.lease_of(None))
            if doc is None:
                return None  # withdrawn meanwhile
            verify(doc, self.key)
        except SupersededError:
            raise
        except OrchError as exc:
            log.warning("refused assignment %s.%d: %s", job_id, n, exc)
            return None
        if (doc.job_id, doc.attempt, doc.worker_id) != (job_id, n, self.id):
            log.warning("refused assignment %s.%d: it names job %s attempt %d for worker %s",
                        job_id, n, doc.job_id, doc.attempt, doc.worker_id)
            return None
        return doc

    def run_attempt(self, job_id: str, n: int) -> None:
        """Run attempt ``n`` of ``job_id`` if its assignment holds and it has not
        ended; either way the job counts as done here (``--job`` workers exit)."""
        try:
            self._run_attempt(job_id, n)
        except LeaseLapsedError as exc:
            log.warning("%s.%d: %s; stopped the run (the daemon re-queues the job)",
                        job_id, n, exc)
            with self._lock:  # still in the inbox when the hub is back: still ours
                self._done.discard((job_id, n))
        except SupersededError:
            log.warning("%s attempt %d was stopped", job_id, n)
        finally:
            with self._lock:
                self._finished.add(job_id)

    def _run_attempt(self, job_id: str, n: int) -> None:
        assignment = self.assigned(job_id, n)
        if assignment is None:
            return
        lease = self.lease_of(assignment)
        try:
            done = self.retry(lambda: self.hub.get_doc(P.status(job_id, n), P.RunStatus),
                              lease)
        except SupersededError:
            raise
        except OrchError:
            done = None  # unreadable: the attempt's own writer (us) rewrites it
        if done and done.phase in P.TERMINAL_PHASES:
            log.info("%s.%d already ended (%s); skipping", job_id, n, done.phase.value)
            return
        run = AttemptRun(self, job_id, n, resume_from=assignment.resume_from, lease=lease)
        self.beat()
        try:
            run.execute()
        except LeaseLapsedError:
            raise
        except SupersededError:
            log.warning("%s attempt %d was superseded; stopped it", job_id, n)
        except HubFullError as exc:  # one line, no traceback: retrying does not help
            log.error("attempt %s.%d stopped: %s", job_id, n, exc)
            try:
                run.fail(str(exc))
            except OrchError as again:
                log.error("could not report the failure of %s.%d: %s", job_id, n, again)
        except Exception as exc:
            log.exception("attempt %s.%d hit a worker error", job_id, n)  # not the worker
            try:
                run.fail(f"worker error: {type(exc).__name__}: {exc}")
            except Exception:
                log.exception("could not report the failure of %s.%d", job_id, n)
        finally:
            with self._lock:
                self.jobs_run += 1


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    try:
        cfg = parse_args(argv)
        worker = Worker(cfg)
        signal.signal(signal.SIGTERM, lambda *_: worker.request_stop(now=False))
        signal.signal(signal.SIGINT, lambda *_: worker.request_stop(now=True))
        worker.run()
    except OrchError as exc:
        print(f"orch worker: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
