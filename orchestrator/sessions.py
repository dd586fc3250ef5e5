"""Colab sessions as they really are: when one started, and how long they last.

Worker side (standard library only; it runs inside Colab): :func:`session_start`
says when the worker's session began. A Colab session's clock starts with its
runtime (the VM or container the notebook got), not with the cell that started
the worker, so ``runtime`` is the start of the runtime's first process (PID 1),
unless ``$ORCH_RUNTIME_STARTED`` (epoch seconds) says otherwise (a stand-in
runtime). A PID 1 older than the session's cap is no Colab runtime (Colab recycles
its runtimes by then: a workstation, a long-lived container): the session is then
taken to start with the worker's process.

Daemon side: when a session worker's heartbeats stop without a clean "stopped",
its session ended; the store keeps how old it was at its last heartbeat (a lower
bound of its length) per account (:meth:`Store.record_session_end`).
:class:`SessionLengths` turns those into a conservative figure of how long a
session of an account lasts (the 20th percentile of its last 20; the project's when
that account has none; the 12 h cap when nothing is known) and of how long a live
one has left at its age. Pure logic, no I/O.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .models import format_duration
from .procgroup import start_ticks

CAP = 12 * 3600.0  # a Colab session's cap: no session outlives it
SAMPLES = 20  # the newest session ends an account's figure is made of
PERCENTILE = 0.2  # the share of them shorter than the figure (a low one: conservative)
IDLE_NOTE = "free Colab may disconnect after ~90 min without interaction"
RUNTIME_ENV = "ORCH_RUNTIME_STARTED"


# ---- worker side ---------------------------------------------------------------------


def process_started(pid: int | str = "self") -> float | None:
    """When process ``pid`` started (epoch seconds, this machine's clock), from
    ``/proc``; None where there is no ``/proc`` (macOS) or it cannot be read."""
    ticks = start_ticks(pid)
    if ticks is None:
        return None
    try:
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def session_start(how: str, cap_hours: float | None, now: float | None = None) -> float:
    """When this worker's session started (epoch seconds). ``how``: ``process`` (this
    process's start), ``runtime`` (the runtime's: see the module's docstring), or a
    number of epoch seconds. Never later than this process's start or ``now``."""
    now = time.time() if now is None else now
    own = min(now, process_started() or now)
    if how == "process":
        return own
    if how != "runtime":
        try:
            return min(own, float(how))
        except ValueError:
            from .errors import UsageError

            raise UsageError(f"bad --session-start {how!r}: use process, runtime or epoch "
                             "seconds") from None
    given = os.environ.get(RUNTIME_ENV)
    if given:
        try:
            return min(own, float(given))
        except ValueError:
            pass
    first = process_started(1)
    cap = (cap_hours or 0) * 3600 or CAP
    if first is None or now - first >= cap:
        return own  # no runtime of a session (a workstation): its process's start
    return min(own, first)


# ---- daemon side ---------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """How long a session lasts (seconds), and how that was found (for `orch explain`)."""

    seconds: float
    how: str


@dataclass(frozen=True)
class SessionLengths:
    """Learned session lengths: ``ends`` is ``(account, seconds)`` per ended session,
    newest first ("" for a worker that named no account)."""

    ends: Sequence[tuple[str, float]] = ()
    _by: dict[str, list[float]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for account, seconds in self.ends:
            self._by.setdefault(account, []).append(seconds)

    def samples(self, account: str | None) -> tuple[list[float], str]:
        """The newest lengths of ``account``'s sessions (the project's when it has
        none, or names none), and whose they are."""
        mine = self._by.get(account or "", []) if account else []
        if mine:
            return mine[:SAMPLES], f"{account}'s"
        return [s for _, s in self.ends][:SAMPLES], "this project's"

    def left(self, account: str | None, age: float) -> Figure:
        """Seconds a session of ``account`` that is ``age`` old likely has left: the
        low figure of the sessions that lasted longer than ``age`` (none: it is
        likely to end any moment); without any: the cap."""
        seen, whose = self.samples(account)
        if not seen:
            return Figure(max(0.0, CAP - age),
                          f"no session end seen yet: the {CAP / 3600:.0f} h cap ({IDLE_NOTE})")
        longer = sorted(s for s in seen if s > age)
        if not longer:
            return Figure(0.0, f"older than every one of {whose} last {len(seen)} "
                               f"session(s) (longest {format_duration(max(seen))})")
        low = longer[int(PERCENTILE * (len(longer) - 1))]
        at = f" once {format_duration(age)} old" if age >= 60 else ""
        return Figure(min(low, CAP) - age,
                      f"learned from {whose} last {len(seen)} session(s): they last "
                      f"{format_duration(low)} or more{at}")


def learned(ends: Iterable[tuple[str | None, float]]) -> SessionLengths:
    """:class:`SessionLengths` of ``(account, seconds)`` rows, newest first."""
    return SessionLengths(tuple((a or "", float(s)) for a, s in ends if s is not None))
