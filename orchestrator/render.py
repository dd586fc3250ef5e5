"""Turning jobs into text for the terminal.

Tables for ``orch status`` are plain text (with ANSI colour on a terminal), so the
command stays fast; ``rich`` is imported only by the live views (``orch top``,
``orch submit --wait``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .models import (
    HAS_RESULT,
    ON_WORKER,
    Attempt,
    Event,
    Job,
    JobState,
    WorkerInfo,
    format_duration,
)

if TYPE_CHECKING:
    from .snapshot import Plan

S = JobState
COLOURS = {
    S.QUEUED: "33", S.ASSIGNED: "36", S.RUNNING: "34", S.SUCCEEDED: "32", S.PULLED: "32;1",
    S.FAILED: "31;1", S.LOST: "35", S.CANCELLED: "90",
}
RICH_COLOURS = {
    S.QUEUED: "yellow", S.ASSIGNED: "cyan", S.RUNNING: "blue", S.SUCCEEDED: "green",
    S.PULLED: "bold green", S.FAILED: "bold red", S.LOST: "magenta", S.CANCELLED: "dim",
}


def fraction(job: Job) -> float | None:
    """How far training is, 0..1, from the last progress report (None if unknown)."""
    if job.state in HAS_RESULT:
        return 1.0
    p = job.progress
    epochs = p.get("epochs")
    if not epochs:
        return None
    done = float(p.get("completed_epochs") or 0)
    batches, batch, epoch = p.get("batches"), p.get("batch") or 0, p.get("epoch")
    if batches and epoch is not None and epoch >= done:  # inside an unfinished epoch
        done += min(1.0, batch / batches)
    return max(0.0, min(1.0, done / epochs))


def progress_text(job: Job) -> str:
    p = job.progress
    frac = fraction(job)
    if job.state in HAS_RESULT:
        return "done"
    if frac is None or p.get("epoch") is None:
        return "-"
    text = f"ep {int(p['epoch']) + 1}/{p['epochs']} {frac * 100:3.0f}%"
    if p.get("eta_s"):
        text += f" eta {format_duration(p['eta_s'])}"
    return text


def metrics_text(job: Job, limit: int = 3) -> str:
    metrics: dict[str, Any] = job.progress.get("metrics") or {}
    keys = sorted(metrics, key=lambda k: (k.startswith("val_") is False, k))[:limit]
    return " ".join(f"{k}={metrics[k]:.4g}" for k in keys) or "-"


def elapsed(job: Job, now: float | None = None) -> str:
    if job.started_at is None:
        return "-"
    end = job.finished_at or (now or time.time())
    return format_duration(end - job.started_at)


def planned(job: Job) -> tuple[str | None, float | None]:
    """A queued job's placement: the server it waits for (or, on a worker, was
    placed on), and when (the daemon's clock) it is expected to finish; (None, None)
    when it was not planned (or runs elsewhere than planned)."""
    if job.state not in ON_WORKER | {S.QUEUED} or not job.placement:
        return None, None
    from .placement import Decision

    try:
        decision = Decision.from_json(job.placement)
    except (ValueError, TypeError, KeyError):
        return None, None  # written by another orch version: planned again soon
    choice = decision.choice
    if choice is None or job.worker_id not in (None, choice.server.partition("#")[0]):
        return None, None
    end = choice.finish_in
    return choice.server, None if end is None else decision.at + end


def where(job: Job) -> str:
    if job.worker_id:
        return job.worker_id
    server, _ = planned(job)
    return f"→ {server}" if server else job.target


def expected_end(job: Job, now: float) -> float | None:
    """When (the clock's time) the job is expected to end: from its plan while
    queued, from its progress's ETA on a worker; None when not known."""
    eta = job.progress.get("eta_s") if job.state in ON_WORKER else None
    return now + eta if isinstance(eta, (int, float)) else planned(job)[1]


def finish_text(job: Job, now: float) -> str:
    """`orch status`'s FINISH column: how long until the job is expected to end."""
    end = expected_end(job, now)
    return "-" if end is None else f"~{format_duration(max(0.0, end - now))}"


def attempt_text(job: Job) -> str:
    return f" (try {job.attempt})" if job.attempt > 1 else ""


def row(job: Job, now: float) -> list[str]:
    return [job.id, job.name, where(job), job.state.value + attempt_text(job), progress_text(job),
            finish_text(job, now), metrics_text(job), elapsed(job, now)]


HEADERS = ["ID", "NAME", "WHERE", "STATE", "PROGRESS", "FINISH", "METRICS", "ELAPSED"]


def jobs_table(jobs: Sequence[Job], colour: bool = False, now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = [row(j, now) for j in jobs]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(HEADERS)]
    widths[1] = min(widths[1], 40)
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADERS, widths)).rstrip()]
    for job, cells in zip(jobs, rows):
        cells = [c if len(c) <= w else c[: w - 1] + "…" for c, w in zip(cells, widths)]
        padded = [c.ljust(w) for c, w in zip(cells, widths)]
        if colour:
            padded[3] = f"\x1b[{COLOURS[job.state]}m{padded[3]}\x1b[0m"
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def when(ts: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else "-"


def job_detail(job: Job, events: Sequence[Event], attempts: Sequence[Attempt],
               log_tail: str) -> str:
    lines = [
        f"job {job.id}  {job.name}",
        f"  state     {job.state.value}{attempt_text(job)}",
        f"  script    {job.script} {' '.join(job.args)}".rstrip(),
        f"  target    {job.target}  gpu={job.gpu.value}  priority={job.priority}",
        f"  where     {where(job)}",
        f"  progress  {progress_text(job)}   {metrics_text(job, 6)}",
        f"  elapsed   {elapsed(job)}",
    ]
    if job.progress.get("tensorflow"):
        lines.append(f"  trained with TensorFlow {job.progress['tensorflow']}")
    packages = dict(job.env).get("ORCH_REQUIREMENTS")
    if packages:
        lines.append(f"  packages  {' '.join(json.loads(packages))}")
    if job.exit_code is not None:
        lines.append(f"  exit code {job.exit_code}")
    if job.error:
        lines.append(f"  error     {job.error}")
    if job.pull_error:
        lines.append(f"  not pulled {job.pull_error}")
    if job.pulled_to:
        lines.append(f"  pulled to {', '.join(job.pulled_to)}")
    lines.append("attempts:")
    for a in attempts:
        resumed = f", resumed at epoch {a.resumed_from_epoch + 1}" if a.resumed_from_epoch else ""
        lines.append(f"  #{a.n} on {a.worker_id or '-'}: {a.outcome or 'in progress'}"
                     f" (assigned {when(a.assigned_at)}, ended {when(a.ended_at)}{resumed})")
    lines.append("history:")
    for e in events:
        move = f"{e.src or '-'} → {e.dst}" if e.dst else "note"
        lines.append(f"  {when(e.at)}  {move:24s} {e.message}")
    if log_tail:
        lines.append("last log lines:")
        lines += ["  " + ln for ln in log_tail.splitlines()]
    return "\n".join(lines)


def workers_line(workers: Sequence[WorkerInfo]) -> str:
    """The live workers in one line: each one's id (a Ray worker's is its Ray job's
    submission id, said so), where it works (``local``, a remote hub, ``ssh:HOST``,
    ``ray:CLUSTER``), its GPU and whether it is busy; "" with none."""
    def one(w: WorkerInfo) -> str:
        where = "local" if w.hub == "local" else ("colab" if w.kind == "colab" else w.hub)
        gpu = f", {w.gpu_name or 'GPU'}" if w.gpu else ""
        name = f"Ray job {w.id}" if w.kind == "ray" else w.id
        return f"{name} ({where}{gpu}) {'busy' if w.job_id else w.state}"

    return ("workers: " + " · ".join(one(w) for w in workers)) if workers else ""


Ended = Callable[[list[Job]], dict[str, str]]  # jobs → {id: line} of those that just ended


def nobody() -> None:
    """The default ``told``: nobody else to tell."""


def wait_progress(read: Callable[[], list[Job]], finished: Callable[[Job], bool],
                  ended: Ended, told: Callable[[], None] = nobody,
                  interval: float = 0.1) -> list[Job]:
    """``orch submit --wait``: one progress bar per job until all are finished; a
    line above the bars for each job as it ends (``ended``), then ``told()``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    jobs = read()
    columns = (TextColumn("{task.fields[name]}"), BarColumn(),
               TextColumn("{task.fields[state]}"), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())
    with Progress(*columns, transient=False) as bar:
        tasks = {j.id: bar.add_task("", total=1.0, name=j.name, state="", info="") for j in jobs}
        while True:
            for j in jobs:
                frac = fraction(j)
                bar.update(tasks[j.id], completed=frac or 0.0,
                           state=f"[{RICH_COLOURS[j.state]}]{j.state.value}{attempt_text(j)}[/]",
                           info=f"{progress_text(j)} {metrics_text(j, 2)}")
            for line in ended(jobs).values():
                bar.console.print(line, markup=False, highlight=False)
            told()
            if all(finished(j) for j in jobs):
                return jobs
            time.sleep(interval)
            jobs = read()


def wait_plain(read: Callable[[], list[Job]], finished: Callable[[Job], bool],
               emit: Callable[[str], None], ended: Ended, told: Callable[[], None] = nobody,
               interval: float = 0.1) -> list[Job]:
    """``--wait`` without a terminal: one line per state change (for an end, the
    fuller line of ``ended``, then ``told()``)."""
    seen: dict[str, str] = {}
    while True:
        jobs = read()
        lines = ended(jobs)
        for j in jobs:
            mark = j.state.value + attempt_text(j)
            if seen.get(j.id) != mark:
                seen[j.id] = mark
                emit(lines.get(j.id) or f"{j.id} {j.name}: {mark}")
        told()
        if all(finished(j) for j in jobs):
            return jobs
        time.sleep(interval)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def snapshot_preview(plan: Plan, root: Path) -> str:
    """`orch submit --dry-run`: what would ship, and why each other path would not."""
    sizes = [(name, path.stat().st_size) for name, path in plan.files]
    width = max([len(n) for n, _ in sizes] + [len(e.rel) for e in plan.excluded] + [10])
    lines = [f"would ship {len(sizes)} file(s), {_size(sum(s for _, s in sizes))}, from {root}:"]
    lines += [f"  {name.ljust(width)}  {_size(size)}" for name, size in sizes]
    if plan.excluded:
        lines.append("left out:")
        lines += [f"  {e.rel.ljust(width)}  {e.why}{' (credential)' if e.secret else ''}"
                  for e in plan.excluded]
    lines += [f"warning: {w}" for w in plan.warnings]
    lines.append("nothing was queued (--dry-run)")
    return "\n".join(lines)


def explain_text(job: Job, events: Sequence[Event]) -> str:
    """`orch explain`: the job's latest placement decision, and the history of them."""
    from .placement import Decision

    lines = [f"job {job.id}  {job.name}  ({job.state.value}{attempt_text(job)}, --on "
             f"{job.target}, gpu={job.gpu.value})"]
    try:
        d = Decision.from_json(job.placement) if job.placement else None
    except (ValueError, TypeError, KeyError):
        d = None  # kept by another orch version: planned again on the next tick
    if d is None:
        lines.append("  not placed yet: the daemon plans it on its next tick")
    else:
        lines.append(f"  estimate  {d.estimate}")
        lines.append(f"  planned   {when(d.at)} (policy {d.policy})")
        lines.append("  places considered:")
        for option in sorted(d.options, key=lambda o: (o.finish_in is None,
                                                        o.finish_in or o.start_in)):
            mark = "→" if d.choice and option.server == d.choice.server else " "
            lines.append(f"   {mark} {option.describe()}")
        if not d.options:
            lines.append("     (none)")
        lines.append(f"  choice    {d.choice.server if d.choice else 'none: waiting'}"
                     f": {d.reason}")
    decisions = [e for e in events if e.dst is None and e.message.startswith("placement:")]
    assigned = [e for e in events if e.dst == "ASSIGNED"]
    if decisions or assigned:
        lines.append("history:")
        for e in sorted([*decisions, *assigned], key=lambda e: e.at):
            lines.append(f"  {when(e.at)}  {e.message}")
    return "\n".join(lines)
