"""`orch top` on a terminal: the live view, its keys, and being told of ends.

Reads the store every :data:`REFRESH` seconds (and at once after a key), draws a
:mod:`.topview` frame on the terminal's alternate screen, and, when stdin is a
terminal too, answers keys: ``q`` quits, up/down (or ``j``/``k``) select a job,
``l`` follows its log (``q`` comes back), ``c`` cancels it after a ``y`` in the
footer. Each job that ends adds a line to the message area for
:data:`MESSAGE_SECONDS` (and, with the ``notify`` setting, rings the bell and
calls the desktop's notifier). The terminal is always restored (:mod:`.keys`).
On exit the last frame is printed to the normal screen.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .config import Project
from .errors import OrchError
from .keys import Keys, interactive, keypresses, sigterm_exits
from .lifecycle import running_pid
from .models import ACTIVE, TERMINAL, UNFINISHED, Job
from .notify import EndWatch, Notifier, ended_line
from .store import Store
from .topview import View, frame_lines, ordered, silence

if TYPE_CHECKING:
    from rich.console import Console

REFRESH = 0.5  # seconds between reads of the store
MESSAGE_SECONDS = 30.0  # how long a job's end stays in the message area
MESSAGES = 3  # at most this many such lines at once
KEYS_HELP = "q quit · ↑/↓ select · l log · c cancel"


class Top:
    """One running `orch top`: what it shows and what the keys did."""

    def __init__(self, project: Project, store: Store, until_done: bool,
                 on_cancel: Callable[[], object]) -> None:
        self.project = project
        self.store = store
        self.until_done = until_done
        self.on_cancel = on_cancel  # after a cancel: make sure a daemon passes it on
        self.selected: str | None = None
        self.asking: Job | None = None  # the job `c` asks about
        self.messages: list[tuple[float, str]] = []
        self.shown: list[Job] = []
        self.jobs: list[Job] = []
        self.ends: EndWatch | None = None
        self.notifier = Notifier(project.settings.notify, sys.stdout)
        self.help = KEYS_HELP

    # ---- reading ------------------------------------------------------------------

    def read(self, height: int) -> View:
        now = time.time()
        self.jobs = self.store.overview(max(10, height))
        if self.ends is None:
            self.ends = EndWatch(self.project.settings.auto_pull, self.jobs)
        for job in self.ends.ended(self.jobs):
            self.say(ended_line(job))
            self.notifier.tell(job)
        workers = self.store.workers()
        s = self.project.settings
        daemon = running_pid(self.project) is not None
        # without a daemon nobody reads the heartbeats: their age says nothing
        silent = {w.id: age for w in workers if daemon
                  and (age := silence(w, now, s.tick_interval, 2 * s.drive_poll_interval))
                  is not None}
        self.shown = ordered(self.jobs)
        if self.selected not in {j.id for j in self.shown}:
            self.selected = self.shown[0].id if self.shown else None
        self.messages = [(t, m) for t, m in self.messages if now - t < MESSAGE_SECONDS]
        footer = (f"cancel {self.asking.id} {self.asking.name}? y/n" if self.asking
                  else self.help)
        title = f"orch top — {self.project.root.name}  {time.strftime('%H:%M:%S')}"
        if not daemon:
            title += "  (no daemon running: `orch daemon start`)"
        return View(title=title,
                    jobs=self.jobs, workers=workers, counts=self.store.counts(),
                    silent=silent, selected=self.selected,
                    messages=[m for _, m in self.messages[-MESSAGES:]], footer=footer, now=now)

    def say(self, line: str) -> None:
        self.messages.append((time.time(), f"{time.strftime('%H:%M:%S')} {line}"))

    def done(self) -> bool:
        return self.until_done and not any(j.state in UNFINISHED for j in self.jobs)

    # ---- keys ---------------------------------------------------------------------

    def move(self, step: int) -> None:
        ids = [j.id for j in self.shown]
        if not ids:
            return
        at = ids.index(self.selected) if self.selected in ids else 0
        self.selected = ids[max(0, min(len(ids) - 1, at + step))]

    def selected_job(self) -> Job | None:
        return next((j for j in self.shown if j.id == self.selected), None)

    def answer(self, key: str) -> None:
        """The reply to "cancel JOB? y/n": only ``y`` cancels."""
        job, self.asking = self.asking, None
        if job is None:
            return
        if key.lower() != "y":
            self.say(f"{job.id} {job.name}: not cancelled")
            return
        try:
            outcome = self.store.cancel(job.id)
        except OrchError as exc:
            self.say(f"{job.id} {job.name}: {exc}")
            return
        self.say(f"{job.id} {job.name}: {outcome}")
        self.on_cancel()


def follow_log(top: Top, job: Job, keys: Keys, out: Any) -> None:
    """Print ``job``'s log as it grows (like `orch logs -f`) until ``q``, Escape or
    ``l`` is pressed; says so when the job has ended."""
    from .joblogs import read_log

    out.write(f"\n--- log of {job.id} {job.name} (q: back to orch top) ---\n")
    offset, attempt, said_end = 0, job.attempt, False
    while True:
        if job.attempt != attempt:
            offset, attempt, said_end = 0, job.attempt, False
            out.write(f"--- attempt {attempt} ---\n")
        try:
            text = read_log(top.project, job, offset=offset)
        except OrchError as exc:  # e.g. a remote hub out of reach: back to top
            top.say(f"{job.id} {job.name}: cannot read its log: {exc}")
            return
        if text:
            offset += len(text.encode("utf-8"))
            out.write(text)
        elif job.state in TERMINAL and not said_end:
            said_end = True
            out.write(f"--- {job.id} {job.name} {job.state.value} (q: back to orch top) ---\n")
        out.flush()
        if keys.read(REFRESH) in ("q", "escape", "l"):
            return
        job = top.store.get(job.id)


def run(top: Top, console: Console) -> None:
    """The live view until ``q``, Ctrl-C, or (``--until-done``) nothing is left to
    do; keys only when stdin and stdout are terminals."""
    from rich.console import Group
    from rich.live import Live

    def frame() -> Group:
        return Group(*frame_lines(top.read(console.height), console.width, console.height))

    use_keys = interactive()
    if not use_keys:
        top.help = "Ctrl-C to leave"
    last = None
    with (keypresses() if use_keys else sigterm_exits()) as keys:
        live = Live(console=console, screen=True, auto_refresh=False, transient=True)
        live.start()
        try:
            while True:
                last = frame()
                live.update(last, refresh=True)
                if top.done():
                    break
                if keys is None:
                    time.sleep(REFRESH)
                    continue
                key = keys.read(REFRESH)
                if key is None:
                    continue
                if top.asking is not None:
                    top.answer(key)
                elif key == "q":
                    break
                elif key in ("up", "k"):
                    top.move(-1)
                elif key in ("down", "j"):
                    top.move(1)
                elif key == "c" and (job := top.selected_job()) is not None:
                    if job.state in ACTIVE:
                        top.asking = job
                    else:
                        top.say(f"{job.id} {job.name} is {job.state.value}: nothing to cancel")
                elif key == "l" and (job := top.selected_job()) is not None:
                    live.stop()
                    follow_log(top, job, keys, console.file)
                    live.start()
        finally:
            live.stop()
    if last is not None:  # the last frame stays on the normal screen
        import dataclasses

        top.asking = None
        view = dataclasses.replace(top.read(console.height), footer="")
        console.print(Group(*frame_lines(view, console.width, console.height - 1)))
