"""Placement: every queued job goes where it is expected to finish first.

The places describe *servers*: each free or busy slot of a live worker (ready now, or
when its current job is expected to end), and each worker a place could start
(ready after its start-up). For each queued job, in priority order, and each server
that may take it (its ``--on``, ``--gpu``), the expected finish is

    wait for the server + start-up + sending the code and data there + the run,

the run at that server's speed (:mod:`.estimates`), and the option *fits* unless the
server goes away first (a Colab session's end) and the job cannot resume from a
checkpoint. The job takes the fitting option that finishes first; that server is
then busy until the job's expected end, so the next job plans around it (greedy
list scheduling). A job whose length is not known yet starts where it can start
first (the probe); its first epoch makes it known.

The scheduler assigns a job only when its chosen server is a free live worker; a
job whose best place is busy, or still to be started, waits for it, however many
slower workers are free. :class:`Decision` records the choice, the other options
and why; `orch explain` prints it. Pure logic: no I/O.

Other policies (for the simulator's comparisons): ``any-free`` (the first free
worker, GPUs first: orch before placement), ``round-robin``, ``rule`` (an estimate
over ten minutes goes to Colab, the rest stays local) and ``local`` (this machine
only).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from .estimates import UNKNOWN_RUN, Estimate, run_device, speed
from .models import GpuNeed, format_duration

if TYPE_CHECKING:
    from .models import Job, WorkerInfo

POLICIES = ("finish-first", "any-free", "round-robin", "rule", "local")
RULE_THRESHOLD = 600.0  # the fixed rule: estimated over ten minutes → Colab


@dataclass(frozen=True)
class Server:
    """Somewhere a job could run. ``ready_in``: seconds until it can start one (a
    busy slot: its job's expected rest; a worker still to start: its start-up)."""

    key: str
    place: str
    device: str
    worker: WorkerInfo  # the live worker, or one as the place would start it
    ready_in: float = 0.0
    startup: float = 0.0  # part of ready_in: the time to start the worker
    remote: bool = False  # the job's code and data must be sent to its hub
    ends_in: float | None = None  # it goes away then (a Colab session's end)
    live: bool = True  # a worker that exists (not one a place would start)
    session: str = ""  # how ``ends_in`` was figured (learned session lengths, the cap)


@dataclass(frozen=True)
class Option:
    """One server for one job: when the job would start there, and end."""

    server: str
    place: str
    device: str
    start_in: float  # wait + start-up
    transfer: float
    run: float | None  # None: not known yet
    fits: bool
    live: bool = True
    ends_in: float | None = None  # its server's session likely ends then
    session: str = ""  # how that was figured

    @property
    def finish_in(self) -> float | None:
        return None if self.run is None else self.start_in + self.transfer + self.run

    def describe(self) -> str:
        parts = [f"start in {format_duration(self.start_in)}"]
        if self.transfer >= 1:
            parts.append(f"send {format_duration(self.transfer)}")
        parts.append(f"run {format_duration(self.run)}" if self.run is not None
                     else "run ?")
        end = (f"finish in {format_duration(self.finish_in)}" if self.finish_in is not None
               else "finish ?")
        cut = ""
        if self.ends_in is not None:
            ends = f"session ends in {format_duration(max(0.0, self.ends_in))}" + (
                f", {self.session}" if self.session else "")
            cut = f" ({ends})" if self.fits else f" (its session ends first: {ends})"
        return f"{self.server} ({self.device}): {end} = {' + '.join(parts)}{cut}"


@dataclass(frozen=True)
class Decision:
    """Where one job should go, with the options it had and why."""

    job_id: str
    estimate: str
    options: tuple[Option, ...] = ()
    choice: Option | None = None
    reason: str = ""
    policy: str = "finish-first"
    at: float = 0.0  # when it was decided (the daemon's clock)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Decision:
        raw = json.loads(text)
        options = tuple(Option(**o) for o in raw.pop("options"))
        choice = raw.pop("choice")
        return cls(options=options, choice=Option(**choice) if choice else None, **raw)

    def summary(self) -> str:
        """One line for the job's history."""
        if self.choice is None:
            return f"placement: waiting ({self.reason})"
        return f"placement: {self.choice.server}, {self.reason}"


@dataclass
class _Plan:
    ready: dict[str, float] = field(default_factory=dict)
    turn: int = 0  # round-robin's next server


def options_for(job: Job, estimate: Estimate, servers: Sequence[Server], ready: dict[str, float],
                speeds: dict[str, float], transfer: Callable[[Job, Server], float]
                ) -> list[Option]:
    """What running ``job`` on each of ``servers`` (those it may run on) would take."""
    out = []
    for s in servers:
        start = ready.get(s.key, s.ready_in)
        send = transfer(job, s) if s.remote else 0.0
        run = estimate.seconds_at(speed(speeds, run_device(job.gpu, s.device)))
        end = start + send + (run if run is not None else 0.0)
        fits = s.ends_in is None or job.checkpoints or run is None or end <= s.ends_in
        out.append(Option(s.key, s.place, s.device, start, send, run, fits, s.live,
                          s.ends_in, s.session))
    return out


def _pick(policy: str, job: Job, estimate: Estimate, options: list[Option], state: _Plan,
          servers: Sequence[Server]) -> tuple[Option | None, str]:
    fitting = [o for o in options if o.fits]
    if not options:
        return None, "no place of this project can take it"
    if not fitting:
        return None, "every place that could take it would end before it does, and it " \
                     "does not checkpoint"
    if policy == "local":
        fitting = [o for o in fitting if o.place == "local"] or fitting
    if policy == "rule":
        run = estimate.seconds_at(1.0)
        wanted = "colab" if run is not None and run > RULE_THRESHOLD else "local"
        fitting = [o for o in fitting if o.place == wanted] or fitting
    if policy == "round-robin":
        keys = [s.key for s in servers]  # workers a place would start take turns too
        for i in range(len(keys)):
            key = keys[(state.turn + i) % len(keys)]
            match = next((o for o in fitting if o.server == key), None)
            if match is not None:
                state.turn = (state.turn + i + 1) % len(keys)
                return match, "the next worker in turn"
        return None, "no worker in turn can take it"
    if policy in ("any-free", "local", "rule"):
        best = min(fitting, key=lambda o: (o.start_in, not o.device.startswith("gpu")))
        return best, "the first free worker"
    known = [o for o in fitting if o.finish_in is not None]
    if not known:  # the probe: its length shows once it runs
        best = min(fitting, key=lambda o: o.start_in)
        return best, f"starts first (in {format_duration(best.start_in)}); " \
                     "its length is not known yet"
    best = min(known, key=lambda o: (o.finish_in, o.start_in))
    others = sorted((o for o in known if o.server != best.server),
                    key=lambda o: o.finish_in or 0.0)
    nxt = f"; next best {others[0].server} in {format_duration(others[0].finish_in)}" \
        if others else ""
    return best, f"finishes first (in {format_duration(best.finish_in)}){nxt}"


def plan(jobs: Sequence[Job], servers: Sequence[Server], estimates: dict[str, Estimate],
         speeds: dict[str, float], transfer: Callable[[Job, Server], float],
         allows: Callable[[Job, WorkerInfo], bool], policy: str = "finish-first"
         ) -> list[Decision]:
    """A decision for each of ``jobs`` (in priority order), each server kept busy by
    the jobs planned on it before. ``allows(job, worker)`` may depend only on the
    job's ``target`` and ``gpu`` (it is asked once per pair and worker)."""
    state = _Plan({s.key: s.ready_in for s in servers})
    decisions = []
    allowed: dict[tuple[str, GpuNeed], list[Server]] = {}  # allows() sees only these two
    for job in jobs:
        est = estimates[job.id]
        mine = allowed.get((job.target, job.gpu))
        if mine is None:
            mine = allowed[(job.target, job.gpu)] = [s for s in servers if allows(job, s.worker)]
        options = options_for(job, est, mine, state.ready, speeds, transfer)
        choice, reason = _pick(policy, job, est, options, state, servers)
        if choice is not None:
            state.ready[choice.server] = (choice.start_in + choice.transfer
                                          + (choice.run if choice.run is not None
                                             else UNKNOWN_RUN))
        decisions.append(Decision(job.id, est.source, tuple(options), choice, reason, policy))
    return decisions
