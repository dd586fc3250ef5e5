"""What one frame of `orch top` shows, fitted to a terminal of any size.

Pure layout: a :class:`View` (jobs, workers, counts, messages, footer) and a
terminal's width and height in, lines of ``rich`` Text out (:func:`frame_lines`),
never wider or taller than asked. Below :data:`NARROW` columns the job table keeps
id, name, place, state, progress and ETA (metrics from :data:`METRICS_FROM`
columns); wider, it shows everything. Rows are ordered by relevance (on a worker,
then waiting to be pulled, then queued, then the newest ended) and cut with a
"+N more" line when the terminal is too short. The loop is in :mod:`.top`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .models import ON_WORKER, TERMINAL, UNFINISHED, Job, JobState, WorkerInfo, format_duration
from .render import RICH_COLOURS, attempt_text, elapsed, fraction, metrics_text, where

if TYPE_CHECKING:
    from rich.text import Text

S = JobState
NARROW = 120  # terminals narrower than this get the narrow layout
METRICS_FROM = 100  # the narrow layout shows metrics from this width
GAP = 2  # spaces between columns
SILENT_MIN = 3.0  # seconds: a heartbeat is never called late sooner than this


@dataclass(frozen=True)
class Column:
    header: str
    least: int  # the narrowest it gets before the layout gives up on room
    most: int  # the widest it gets
    give: int = 1  # how readily it gives up width to others (more: sooner)


@dataclass(frozen=True)
class View:
    """Everything one frame shows. ``silent``: seconds each late worker (by id) has
    been silent; ``selected``: the selected job's id; ``messages``: lines about jobs
    that ended lately, oldest first; ``footer``: the keys, or a question."""

    title: str
    jobs: Sequence[Job]
    workers: Sequence[WorkerInfo]
    counts: dict[JobState, int] = field(default_factory=dict)
    silent: dict[str, float] = field(default_factory=dict)
    selected: str | None = None
    messages: Sequence[str] = ()
    footer: str = ""
    now: float = 0.0


def silence(worker: WorkerInfo, now: float, tick: float, hub_lag: float) -> float | None:
    """Seconds ``worker`` has been silent, when its heartbeat is clearly late: more
    than three of its heartbeat intervals (and two daemon ticks, plus ``hub_lag``
    for a remote hub) since the daemon last saw it beat; None while it beats."""
    interval = worker.heartbeat_interval or 1.0
    late = max(3 * interval, 2 * tick, SILENT_MIN) + (0.0 if worker.hub == "local" else hub_lag)
    age = now - worker.last_seen
    return age if age > late else None


def place_of(worker: WorkerInfo) -> str:
    """Where a worker works: ``local``, ``colab``, ``ssh:HOST``, ``ray:…`` or its hub."""
    if worker.hub == "local":
        return "local"
    return "colab" if worker.kind == "colab" else worker.hub


def ordered(jobs: Sequence[Job]) -> list[Job]:
    """Most relevant first: on a worker, then to pull (or lost), then queued (in
    scheduling order), then ended (newest first)."""
    def key(j: Job) -> tuple[int, float, float]:
        if j.state in ON_WORKER:
            return (0, j.seq, 0)
        if j.state in UNFINISHED - {S.QUEUED}:
            return (1, j.seq, 0)
        if j.state is S.QUEUED:
            return (2, -j.priority, j.seq)
        return (3, -(j.finished_at or j.updated_at), 0)

    return sorted(jobs, key=key)


def eta_text(job: Job, now: float) -> str:
    """How long until the job is expected to end; "" once it ended (or to pull)."""
    if job.state not in ON_WORKER | {S.QUEUED}:
        return ""
    from .render import expected_end

    end = expected_end(job, now)
    return "-" if end is None else format_duration(max(0.0, end - now))


def progress_cell(job: Job, bar: int) -> str:
    """``ep 3/10 27%`` (and a bar of ``bar`` characters before it when > 0)."""
    if job.state in TERMINAL - {S.PULLED} or job.state is S.LOST:
        return ""
    frac = fraction(job)
    if job.state in (S.SUCCEEDED, S.PULLED):
        text = "done"
    elif frac is None or job.progress.get("epoch") is None:
        return "-"
    else:
        text = f"ep {int(job.progress['epoch']) + 1}/{job.progress['epochs']} {frac * 100:.0f}%"
    if bar and frac is not None:
        filled = round(frac * bar)
        text = "█" * filled + "░" * (bar - filled) + " " + text
    return text


def state_cell(job: Job, silent: float | None) -> str:
    text = job.state.value + attempt_text(job)
    return text + (f" silent {silent:.0f} s" if silent is not None else "")


def job_columns(width: int) -> list[Column]:
    if width < NARROW:
        cols = [Column("ID", 8, 8), Column("NAME", 6, 24, 3), Column("PLACE", 5, 20, 2),
                Column("STATE", 7, 22), Column("PROGRESS", 4, 13), Column("ETA", 3, 6)]
        if width >= METRICS_FROM:
            cols.append(Column("METRICS", 8, 40))
        return cols
    return [Column("ID", 8, 8), Column("NAME", 8, 32, 3), Column("PLACE", 8, 28, 2),
            Column("STATE", 9, 24), Column("PROGRESS", 8, 26), Column("ETA", 3, 7),
            Column("METRICS", 10, 60, 3), Column("ELAPSED", 7, 8)]


def job_place(job: Job, places: dict[str, str], wide: bool) -> str:
    """Where the job runs (or is planned to): the worker's id when there is room,
    else its place (``local``, ``colab``, ``ssh:box``…); ``--on`` while unplaced."""
    at = where(job)
    if wide:
        return at
    planned = at.startswith("→ ")
    worker = at[2:] if planned else at
    place = places.get(worker.partition("#")[0])
    return at if place is None else ("→ " if planned else "") + place


def job_cells(job: Job, cols: list[Column], silent: float | None, now: float,
              places: dict[str, str]) -> list[str]:
    wide = any(c.header == "ELAPSED" for c in cols)
    metrics = metrics_text(job, 4 if wide else 2) if job.progress.get("metrics") else ""
    cells = {"ID": job.id, "NAME": job.name, "PLACE": job_place(job, places, wide),
             "STATE": state_cell(job, silent), "PROGRESS": progress_cell(job, 10 if wide else 0),
             "ETA": eta_text(job, now), "METRICS": metrics, "ELAPSED": elapsed(job, now)}
    return [cells[c.header] for c in cols]


def worker_cells(w: WorkerInfo, silent: float | None, now: float) -> list[str]:
    left = w.time_left(now)
    beat = (f"silent {silent:.0f} s" if silent is not None
            else f"{max(0.0, now - w.last_seen):.0f} s ago")
    doing = w.job_id or w.state
    return [w.id, place_of(w), (w.gpu_name or "GPU") if w.gpu else "-", doing,
            "-" if left is None else format_duration(max(0.0, left)), beat]


WORKER_COLUMNS = [Column("WORKER", 8, 26), Column("PLACE", 5, 20), Column("GPU", 3, 12),
                  Column("DOING", 4, 10), Column("SESSION", 7, 8), Column("HEARTBEAT", 9, 14)]


def widths(cols: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> list[int]:
    """Each column's width: its content's (between ``least`` and ``most``), then the
    widest columns narrowed, one character at a time, until the row fits ``width``."""
    out = [max(c.least, min(c.most, max([len(c.header), *(len(r[i]) for r in rows)])))
           for i, c in enumerate(cols)]
    while sum(out) + GAP * (len(out) - 1) > width:
        slack = [(w - c.least) * c.give for w, c in zip(out, cols)]
        i = max(range(len(out)), key=lambda k: slack[k])
        if slack[i] <= 0:
            break  # no room left to take: lines are cropped at the edge
        out[i] -= 1
    return out


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else (text[: width - 1] + "…" if width > 0 else "")


def table_line(cells: Sequence[str], ws: Sequence[int]) -> str:
    return (" " * GAP).join(clip(c, w).ljust(w) for c, w in zip(cells, ws)).rstrip()


def more_line(counts: dict[JobState, int], jobs: Sequence[Job], shown: Sequence[Job]) -> str:
    """``+N more: 2 running, 5 queued, 40 ended`` for the jobs not on the screen
    (``counts``: every job's state, from the store; ``jobs``: those read)."""
    left: dict[JobState, int] = dict(counts) if counts else {}
    if not counts:
        for j in jobs:
            left[j.state] = left.get(j.state, 0) + 1
    for j in shown:
        left[j.state] = left.get(j.state, 0) - 1
    groups: dict[str, int] = {}
    for state, n in left.items():
        label = ("running" if state in ON_WORKER else "queued" if state is S.QUEUED
                 else "ended" if state in TERMINAL else "to pull")
        if n > 0:
            groups[label] = groups.get(label, 0) + n
    detail = ", ".join(f"{n} {label}" for label, n in groups.items())
    return f"+{sum(groups.values())} more: {detail} (orch status --all)"


def frame_lines(view: View, width: int, height: int) -> list[Text]:
    """The frame as at most ``height`` lines of at most ``width`` cells."""
    from rich.text import Text

    now = view.now or time.time()
    jobs = ordered(view.jobs)
    fixed = 2 + 1 + len(view.messages)  # title, job header, footer, messages
    avail = max(0, height - fixed - (2 if view.workers else 0))
    job_floor = min(len(jobs) + 1, max(3, 2 * avail // 3))  # jobs come first
    worker_rows = min(len(view.workers), max(1, avail - job_floor)) if view.workers else 0
    job_rows = max(0, avail - worker_rows)
    shown = jobs if len(jobs) <= job_rows else jobs[: max(0, job_rows - 1)]

    lines: list[Text] = [Text(clip(view.title, width), style="bold")]
    cols = job_columns(width)
    silent_of = {j.id: view.silent.get(j.worker_id or "") if j.state in ON_WORKER else None
                 for j in shown}
    places = {w.id: place_of(w) for w in view.workers}
    rows = [job_cells(j, cols, silent_of[j.id], now, places) for j in shown]
    ws = widths(cols, rows, width)
    lines.append(Text(table_line([c.header for c in cols], ws), style="bold underline"))
    k = [c.header for c in cols].index("STATE")
    state_at = sum(ws[:k]) + GAP * k
    for job, cells in zip(shown, rows):
        text = Text(table_line(cells, ws), style="reverse" if job.id == view.selected else "")
        end = min(len(text), state_at + ws[k])
        colour = "bold red" if silent_of[job.id] is not None else RICH_COLOURS[job.state]
        text.stylize(colour, state_at, end)
        lines.append(text)
    hidden = max(sum(view.counts.values()), len(jobs)) - len(shown)
    if hidden > 0 and (len(shown) < len(jobs) or job_rows > len(shown)):
        lines.append(Text(clip(more_line(view.counts, jobs, shown), width), style="dim"))
    if view.workers:
        lines.append(Text(""))
        wrows = [worker_cells(w, view.silent.get(w.id), now) for w in view.workers]
        cut = worker_rows < len(wrows)
        visible = wrows[: worker_rows - 1] if cut else wrows
        wws = widths(WORKER_COLUMNS, visible or wrows[:1], width)
        lines.append(Text(table_line([c.header for c in WORKER_COLUMNS], wws),
                          style="bold underline"))
        for w, cells in zip(view.workers, visible):
            lines.append(Text(table_line(cells, wws),
                              style="bold red" if w.id in view.silent else ""))
        if cut:
            lines.append(Text(f"+{len(wrows) - len(visible)} more workers (orch status)",
                              style="dim"))
    lines += [Text(clip(m, width), style="cyan") for m in view.messages]
    if view.footer:
        lines.append(Text(clip(view.footer, width), style="dim"))
    for line in lines:
        line.no_wrap = True
        line.overflow = "crop"
        line.truncate(width)
    return lines[:height]
