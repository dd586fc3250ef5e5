"""`orch` commands about jobs: submit, status, logs, top, cancel, retry, pull."""

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import UsageError
from ..models import UNFINISHED, GpuNeed, Job, JobState
from . import app, ensure_daemon, err, job_json, open_store, project_here

S = JobState


@app.command()
def submit(
    script: Annotated[str, typer.Argument(help="Training script, run as `python SCRIPT ARGS…`.")],
    script_args: Annotated[Optional[list[str]], typer.Argument(
        help="Arguments for the script; put them after `--`.", show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option(help="Job name (default: script name).")] = None,
    on: Annotated[str, typer.Option(
        help="Where to run: auto (where it finishes first), local, colab, remote (any "
             "worker not on this machine; needs a Drive hub) or ssh:NAME (a host of "
             "`orch hosts add`).")] = "auto",
    gpu: Annotated[Optional[bool], typer.Option(
        "--gpu/--cpu", help="Require a GPU, or run on the CPU only (default: either).",
        show_default=False)] = None,
    estimate: Annotated[Optional[str], typer.Option(
        help="How long it takes on this machine's CPU, e.g. 40m (default: learned from "
             "earlier runs, or from its first epoch).")] = None,
    gpu_mem: Annotated[Optional[str], typer.Option(
        help="GPU memory it needs in MB, so a GPU can run it beside others (default: "
             "measured at its first run).")] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    data: Annotated[Optional[list[str]], typer.Option(
        help="Data file or folder to ship (repeatable; stored once per content).")] = None,
    output: Annotated[Optional[list[str]], typer.Option(
        help="SRC[:DEST] to bring back (repeatable), e.g. mymodel.h5:. ; default: the job's "
             "output dir, and model files the script saved in its working dir, to "
             "models/NAME/.")] = None,
    env: Annotated[Optional[list[str]], typer.Option(help="NAME=VALUE for the job (repeatable).")]
    = None,
    sweep: Annotated[Optional[list[str]], typer.Option(
        help="NAME=V1,V2,… grid axis (repeatable); one job per combination, given --NAME V.")]
    = None,
    pip: Annotated[Optional[list[str]], typer.Option(
        "--pip", help="An extra package the job needs (repeatable): a requirement such as "
                      "einops==0.8.0, or a wheel/sdist in the project (it ships with the "
                      "job). The worker installs the set once and reuses it for later jobs.")]
    = None,
    requirements: Annotated[Optional[str], typer.Option(
        help="A requirements file in the project, installed like --pip (requirements.txt "
             "is not used unless named here).")] = None,
    auto_track: Annotated[bool, typer.Option(
        "--auto-track", help="Add orch's Keras callbacks to every Model.fit of the script.")]
    = False,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Block until the job(s) end; exit 0 only if all succeeded.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job(s) as JSON.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show what the code snapshot would hold and why each other file "
                          "is left out (credentials never ship); queue nothing.")] = False,
) -> None:
    """Queue a training script. Prints the job id (one per line for a sweep)."""
    from ..config import find_project
    from ..submit import SubmitRequest
    from ..submit import submit as do_submit

    project = find_project()  # .orch/ is made once the submit is accepted
    autotrack = auto_track or os.environ.get("ORCH_AUTOTRACK", "") not in ("", "0")
    req = SubmitRequest(
        script=script, script_args=tuple(script_args or ()), name=name, on=on,
        gpu=GpuNeed.ANY if gpu is None else (GpuNeed.REQUIRED if gpu else GpuNeed.NONE),
        estimate=estimate, priority=priority, data=tuple(data or ()),
        outputs=tuple(output or ()), env=tuple(env or ()), sweep=tuple(sweep or ()),
        autotrack=autotrack, gpu_mem=gpu_mem, pip=tuple(pip or ()), requirements=requirements,
    )
    if dry_run:
        from ..render import snapshot_preview
        from ..submit import preview

        print(snapshot_preview(preview(project, req), project.root))
        return
    jobs = do_submit(project, req)
    started = ensure_daemon(project)
    _warn_if_nothing_can_run(project, jobs, started)
    if as_json:
        print(json.dumps({"jobs": [job_json(j) for j in jobs]}, indent=2))
    else:
        for job in jobs:
            print(job.id)
        err(f"queued {len(jobs)} job(s) for {jobs[0].target}: "
             + ", ".join(f"{j.name} ({j.id})" for j in jobs[:5])
             + (" …" if len(jobs) > 5 else ""))
    if wait:
        raise typer.Exit(_wait(project, [j.id for j in jobs]))


def _warn_if_nothing_can_run(project: Any, jobs: list[Job], started: int | None) -> None:
    """A job no worker will take unless the user acts: say how to start one. Judged
    on the workers the store knows; a daemon that has just started may not have read
    the hubs' heartbeats yet, so before warning, wait for its first tick (``started``:
    the pid of a daemon this command started; no wait when the daemon is up already)."""
    from ..lifecycle import wait_first_scan
    from ..places import project_places, unplaceable_warning

    places = project_places(project)
    with open_store(project) as store:
        warning = unplaceable_warning(places, jobs[0], store.workers())
        if warning and wait_first_scan(project, started):
            warning = unplaceable_warning(places, jobs[0], store.workers())
    if warning:
        err(warning)


def _wait(project: Any, ids: list[str]) -> int:
    from ..notify import EndWatch, Notifier, ended_line
    from ..waiting import JobWatch

    ends = EndWatch(project.settings.auto_pull)
    notifier = Notifier(project.settings.notify, sys.stderr)

    news: list[Job] = []

    def ended(jobs: list[Job]) -> dict[str, str]:
        news[:] = ends.ended(jobs)
        return {job.id: ended_line(job) for job in news}

    def told() -> None:  # after the lines are out: the bell and the desktop
        for job in news:
            notifier.tell(job)
        news.clear()

    with open_store(project) as store:
        watch = JobWatch(project, store, ids)
        try:
            if sys.stderr.isatty():
                from ..render import wait_progress

                jobs = wait_progress(watch.read, watch.finished, ended, told)
            else:
                from ..render import wait_plain

                jobs = wait_plain(watch.read, watch.finished, err, ended, told)
        except KeyboardInterrupt:
            err("stopped waiting; the job(s) keep running (see `orch status`)")
            return 130
        bad = watch.failures(jobs)
    for line in bad:
        err(f"orch: {line}")
    for job in jobs:
        if job.state is S.PULLED:
            from ..curvelogs import LOGS

            logs = [p for p in job.pulled_to if Path(p).name == LOGS]
            models = [p for p in job.pulled_to if p not in logs]
            err(f"{job.name}: model(s) in {', '.join(models) or '(no other output)'}"
                + (f"; learning curves in {logs[0]}" if logs else ""))
    return 1 if bad else 0


# ---- looking at jobs --------------------------------------------------------------


@app.command()
def status(
    job: Annotated[Optional[str], typer.Argument(help="A job id, id prefix or name.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    all_jobs: Annotated[bool, typer.Option(
        "--all", "-a", help="Every job (default: those on workers, the next queued, the "
                            "newest finished).")] = False,
    limit: Annotated[int, typer.Option(help="Queued, and finished, jobs to show.")] = 20,
) -> None:
    """Show all jobs (active ones plus the most recent), or one job in detail."""
    project = project_here()
    with open_store(project) as store:
        if job:
            _status_one(project, store, job, as_json)
            return
        jobs = store.overview(None if all_jobs else limit)
        counts = store.counts()
        workers = store.workers()
    if as_json:
        print(json.dumps({"jobs": [job_json(j) for j in jobs],
                          "counts": {s.value: n for s, n in counts.items()}}, indent=2))
        return
    if not jobs:
        print("no jobs yet: queue one with `orch submit SCRIPT`")
        return
    from ..render import jobs_table, workers_line

    print(jobs_table(jobs, colour=sys.stdout.isatty()))
    hidden = sum(counts.values()) - len(jobs)
    summary = ", ".join(f"{n:,} {s.value.lower()}" for s, n in sorted(counts.items()))
    print(f"\n{sum(counts.values()):,} job(s): {summary}"
          + (f"; {hidden:,} not shown (--all shows every job)" if hidden > 0 else ""))
    if workers:
        print(workers_line(workers))


def _status_one(project: Any, store: Any, ref: str, as_json: bool) -> None:
    from ..joblogs import read_log, tail_text
    from ..render import job_detail

    job = store.resolve(ref)
    events, attempts = store.events(job.id), store.attempts(job.id)
    log_tail = tail_text(read_log(project, job) or "", 10)
    if as_json:
        doc = job_json(job)
        doc["events"] = [e.__dict__ for e in events]
        doc["attempts"] = [a.__dict__ for a in attempts]
        doc["log_tail"] = log_tail
        print(json.dumps(doc, indent=2))
        return
    print(job_detail(job, events, attempts, log_tail))


@app.command()
def logs(
    job: Annotated[str, typer.Argument(help="A job id, id prefix or name.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until it ends.")]
    = False,
    attempt: Annotated[Optional[int], typer.Option(
        help="An earlier attempt's log (e.g. the partial log of a LOST attempt).")] = None,
) -> None:
    """Print a job's log (its current attempt, or --attempt N)."""
    from ..joblogs import follow as follow_log
    from ..joblogs import read_log

    project = project_here()
    with open_store(project) as store:
        current = store.resolve(job)
        if attempt is not None:
            text = read_log(project, current, attempt=attempt)
            if text is None:
                raise UsageError(f"no log for attempt {attempt} of {current.id}")
            sys.stdout.write(text)
            return
        seen = False
        try:
            for chunk in follow_log(project, current, lambda j: store.get(j.id), follow):
                seen = True
                sys.stdout.write(chunk)
                sys.stdout.flush()
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        if not seen:
            current = store.get(current.id)
            err(f"no log yet for {current.id} ({current.state.value})")


@app.command()
def top(
    until_done: Annotated[bool, typer.Option(
        "--until-done", help="Exit when no job is queued or running.")] = False,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
) -> None:
    """A live view of every run, local and remote, and of the workers (their place,
    GPU, session time left, heartbeat age). A job whose worker went silent says so
    ("silent 12 s") long before its lease runs out; each job that ends gets a line
    (and, with the setting `notify = true`, the bell and a desktop notification).
    Keys: q quit, up/down (j/k) select, l follow the selected job's log, c cancel it."""
    from ..render import workers_line

    project = project_here()
    store = open_store(project)

    def with_workers(table: str) -> str:  # the plain views: the workers' line under it
        return "\n".join(part for part in (table, workers_line(store.workers())) if part)

    def read() -> list[Job]:
        return store.overview(10)  # its cost does not grow with a long queue

    if once or not sys.stdout.isatty():
        _top_plain(project, read, with_workers, until_done and not once)
        return
    from rich.console import Console

    from ..top import Top, run

    try:
        run(Top(project, store, until_done, lambda: ensure_daemon(project)), Console())
    except KeyboardInterrupt:
        pass


def _top_plain(project: Any, read: Any, with_workers: Any, until_done: bool) -> None:
    """`orch top` without a terminal: the table, then again on each change (and a
    line per job that ends) until nothing is left to do."""
    from ..notify import EndWatch, Notifier, ended_line
    from ..render import jobs_table

    jobs = read()
    print(with_workers(jobs_table(jobs, colour=sys.stdout.isatty())), flush=True)
    ends = EndWatch(project.settings.auto_pull, jobs)
    notifier = Notifier(project.settings.notify, sys.stdout)
    last = [(j.id, j.state, j.progress.get("completed_epochs")) for j in jobs]
    while until_done and any(j.state in UNFINISHED for j in jobs):  # print on change
        time.sleep(1.0)
        jobs = read()
        for job in ends.ended(jobs):
            print(ended_line(job), flush=True)
            notifier.tell(job)
        now = [(j.id, j.state, j.progress.get("completed_epochs")) for j in jobs]
        if now != last:
            last = now
            print("\n" + with_workers(jobs_table(jobs)), flush=True)


@app.command()
def explain(job: Annotated[str, typer.Argument(help="A job id, id prefix or name.")]) -> None:
    """Where a job was (or will be) placed and why: each place considered, when the job
    would finish there, the choice, and where its length estimate came from."""
    from ..render import explain_text

    project = project_here()
    with open_store(project) as store:
        found = store.resolve(job)
        print(explain_text(found, store.events(found.id)))


# ---- acting on jobs ---------------------------------------------------------------


@app.command()
def cancel(jobs: Annotated[list[str], typer.Argument(help="Job ids, id prefixes or names.")]
           ) -> None:
    """Cancel jobs: queued ones at once, running ones as soon as their worker stops them."""
    project = project_here()
    with open_store(project) as store:
        targets = [store.resolve(r) for r in jobs]
        for job in targets:
            print(f"{job.id} {job.name}: {store.cancel(job.id)}")
    ensure_daemon(project)


@app.command()
def retry(
    jobs: Annotated[list[str], typer.Argument(help="Job ids, id prefixes or names.")],
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="Start from scratch (default: resume from the newest checkpoint).")]
    = False,
) -> None:
    """Queue jobs that ended (failed, cancelled, or succeeded) again: a new attempt of
    the same snapshot, resuming from its newest checkpoint unless --fresh."""
    project = project_here()
    with open_store(project) as store:
        targets = [store.resolve(r) for r in jobs]
        for job in targets:
            job = store.retry(job.id, fresh=fresh)
            how = "from scratch" if fresh else "resuming from its newest checkpoint"
            print(f"{job.id} {job.name}: queued as attempt {job.attempt} ({how})")
    ensure_daemon(project)
