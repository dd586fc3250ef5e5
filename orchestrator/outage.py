"""A worker's view of whether its hub answers: outages, their log lines, backoff.

Every hub call of a worker that fails (heartbeats, inbox polls, a run's progress,
logs, checkpoints and result) reports here (:meth:`Outage.failed`); a heartbeat that
reaches the hub reports :meth:`Outage.ok` (it is a write every time, where reads may
be answered from the hub's cache, so it alone says that the hub is back). An
*episode* runs from the first failure to the next success. Each is logged in one
line when it starts ("hub … unreachable since 10:02:03 (…); retrying every 30 s at
most") and one when it ends ("hub … back after 2m03s"), never a line (or a
traceback) per try.

Backoff is capped exponential: 1, 2, 4 … up to ``cap`` seconds between tries.
:meth:`Outage.lease_lapsed` says whether the hub has been away for longer than a
lease: the daemon has then re-queued the worker's jobs, and the worker stops them.

Thread-safe (the heartbeat thread, the inbox loop and every run report here).
Standard library only: it runs in Colab.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from .errors import LeaseLapsedError, SignInExpiredError, SupersededError, TransientHubError
from .models import format_duration

log = logging.getLogger(__name__)

T = TypeVar("T")

#: the hub errors a worker rides out (keeps its run going, or stays idle, and tries again)
OUTAGE_ERRORS = (TransientHubError, SignInExpiredError)


class Outage:
    """Whether ``hub`` (its url, for the log) answers, as its callers last saw it.

    ``last_ok`` (monotonic) is the time of the last call that worked; a worker's
    lease runs from its last heartbeat that reached the hub, which ``beat_ok``
    records."""

    def __init__(self, hub: str, cap: float = 30.0, base: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.hub = hub
        self.cap = max(0.05, cap)
        self.base = min(base, self.cap)
        self.clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None  # monotonic start of the current episode
        self._wall_since = 0.0
        self._tries = 0
        self._lapsed_said = False
        self.last_ok = clock()
        self.last_beat_ok = self.last_ok

    @property
    def down(self) -> bool:
        with self._lock:
            return self._since is not None

    def ok(self, beat: bool = False) -> None:
        """A call worked (``beat``: it was a heartbeat, which renews the lease)."""
        now = self.clock()
        with self._lock:
            since, self._since = self._since, None
            self._tries = 0
            self._lapsed_said = False
            self.last_ok = now
            if beat:
                self.last_beat_ok = now
        if since is not None:
            log.warning("hub %s back after %s", self.hub, format_duration(now - since))

    def failed(self, exc: BaseException) -> float:
        """A call failed with ``exc``: log it if it starts an episode (or is the first
        sign that sign-in lapsed); the seconds to wait before the next try."""
        now = self.clock()
        with self._lock:
            first = self._since is None
            if first:
                self._since, self._wall_since = now, time.time()
            lapsed = isinstance(exc, SignInExpiredError) and not self._lapsed_said
            if lapsed:
                self._lapsed_said = True
            delay = min(self.cap, self.base * 2 ** min(self._tries, 30))
            self._tries += 1
        if lapsed:
            log.error("Drive sign-in lapsed: run `orch auth` again (and give this worker the "
                      "new credentials); the worker keeps its run and keeps trying")
        if first:
            at = time.strftime("%H:%M:%S", time.localtime(self._wall_since))
            log.warning("hub %s unreachable since %s (%s); retrying every %.0f s at most",
                        self.hub, at, _one_line(exc), self.cap)
        else:
            log.debug("hub %s still unreachable: %s", self.hub, _one_line(exc))
        return delay

    def delay(self) -> float:
        """Seconds to wait before the next try (0 while the hub answers)."""
        with self._lock:
            if self._since is None:
                return 0.0
            return min(self.cap, self.base * 2 ** min(max(0, self._tries - 1), 30))

    def away(self) -> float:
        """Seconds since the last heartbeat reached the hub, while it is away (else 0)."""
        with self._lock:
            return 0.0 if self._since is None else self.clock() - self.last_beat_ok

    def lease_lapsed(self, ttl: float) -> bool:
        """Whether the hub has been away for longer than a lease of ``ttl`` seconds
        (counted from the last heartbeat that reached it)."""
        return self.away() > ttl

    def retry(self, fn: Callable[[], T], lease: float, stop: threading.Event) -> T:
        """``fn()``; while it fails because the hub is away (:data:`OUTAGE_ERRORS`),
        wait with capped backoff and try again. Raises LeaseLapsedError once the hub
        has been away for longer than ``lease`` seconds, SupersededError when ``stop``
        is set (the worker is told to stop now); other errors pass through."""
        while True:
            try:
                return fn()
            except OUTAGE_ERRORS as exc:
                delay = self.failed(exc)
            if self.lease_lapsed(lease):
                raise LeaseLapsedError(f"the hub was out of reach for longer than the lease "
                                       f"({lease:.0f} s)")
            if stop.wait(delay):
                raise SupersededError("the worker was told to stop")


def lease_seconds(stated: float, remote: bool, heartbeat: float) -> float:
    """How long a worker's hub may be away before the daemon has surely re-queued its
    job: the lease ``stated`` (by the assignment or the worker's ``--lease``; else
    orch's defaults, 300 s remote, 20 s local), never under three heartbeats (as the
    daemon counts), plus one heartbeat for the daemon to notice."""
    ttl = stated or (300.0 if remote else 20.0)
    return max(ttl, 3 * heartbeat) + heartbeat


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()
