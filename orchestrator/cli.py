"""The `orch` command line. Thin: each command parses, calls one service, renders.

Errors a user can cause are OrchError: printed as one line, exit code 2 for bad
usage, 1 otherwise. Never imports TensorFlow or Google clients at start-up.
"""

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .errors import NotConfiguredError, OrchError, PullError, UsageError
from .logs import get_logger
from .models import TERMINAL, UNFINISHED, GpuNeed, Job, JobState

log = get_logger("orchestrator.cli")
S = JobState

app = typer.Typer(
    name="orch",
    help="Queue TensorFlow training jobs; run them locally (or remotely); get the models back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
daemon_app = typer.Typer(help="Start, stop or inspect the background daemon.",
                         no_args_is_help=True)
app.add_typer(daemon_app, name="daemon")
auth_app = typer.Typer(help="Sign in to Google Drive (for the Drive hub).",
                       invoke_without_command=True)
app.add_typer(auth_app, name="auth")


def _project(create: bool = False) -> Any:
    from .config import open_project

    return open_project(create=create)


def _store(project: Any) -> Any:
    from .store import Store

    return Store(project.db_path)


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id, "name": job.name, "state": job.state.value, "attempt": job.attempt,
        "target": job.target, "worker": job.worker_id, "script": job.script,
        "args": list(job.args), "progress": job.progress, "exit_code": job.exit_code,
        "error": job.error, "submitted_at": job.submitted_at, "started_at": job.started_at,
        "finished_at": job.finished_at, "pulled_to": list(job.pulled_to),
    }


def _ensure_daemon(project: Any) -> None:
    from .lifecycle import ensure_running

    pid = ensure_running(project)
    if pid:
        _err(f"started the orch daemon (pid {pid}); log: {project.logs_dir / 'daemon.log'}")


# ---- init / submit ---------------------------------------------------------------


@app.command()
def init() -> None:
    """Make the current folder an orch project (creates .orch/). Idempotent."""
    from .config import Project, find_root, load_settings

    root = find_root() or Path.cwd().resolve()
    project = Project(root, load_settings(root))
    new = project.init()
    print(f"{'initialised' if new else 'already an orch project:'} {project.root}")


@app.command()
def submit(
    script: Annotated[str, typer.Argument(help="Training script, run as `python SCRIPT ARGS…`.")],
    script_args: Annotated[Optional[list[str]], typer.Argument(
        help="Arguments for the script; put them after `--`.", show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option(help="Job name (default: script name).")] = None,
    on: Annotated[str, typer.Option(
        help="Where to run: local, remote (workers on the project's Drive hub), auto, colab "
             "or ssh:HOST.")] = "local",
    gpu: Annotated[Optional[bool], typer.Option(
        "--gpu/--cpu", help="Require a GPU, or run on the CPU only (default: either).",
        show_default=False)] = None,
    estimate: Annotated[Optional[str], typer.Option(help="Expected duration, e.g. 40m.")] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    data: Annotated[Optional[list[str]], typer.Option(
        help="Data file or folder to ship (repeatable; stored once per content).")] = None,
    output: Annotated[Optional[list[str]], typer.Option(
        help="SRC[:DEST] to bring back (repeatable), e.g. model.h5:. ; default: the job's "
             "output dir to models/NAME/.")] = None,
    env: Annotated[Optional[list[str]], typer.Option(help="NAME=VALUE for the job (repeatable).")]
    = None,
    sweep: Annotated[Optional[list[str]], typer.Option(
        help="NAME=V1,V2,… grid axis (repeatable); one job per combination, given --NAME V.")]
    = None,
    auto_track: Annotated[bool, typer.Option(
        "--auto-track", help="Add orch's Keras callbacks to every Model.fit of the script.")]
    = False,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Block until the job(s) end; exit 0 only if all succeeded.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job(s) as JSON.")] = False,
) -> None:
    """Queue a training script. Prints the job id (one per line for a sweep)."""
    from .config import Project, find_root, load_settings
    from .submit import SubmitRequest
    from .submit import submit as do_submit

    root = find_root() or Path.cwd().resolve()
    project = Project(root, load_settings(root))
    autotrack = auto_track or os.environ.get("ORCH_AUTOTRACK", "") not in ("", "0")
    req = SubmitRequest(
        script=script, script_args=tuple(script_args or ()), name=name, on=on,
        gpu=GpuNeed.ANY if gpu is None else (GpuNeed.REQUIRED if gpu else GpuNeed.NONE),
        estimate=estimate, priority=priority, data=tuple(data or ()),
        outputs=tuple(output or ()), env=tuple(env or ()), sweep=tuple(sweep or ()),
        autotrack=autotrack,
    )
    jobs = do_submit(project, req)
    _ensure_daemon(project)
    _warn_if_nothing_can_run(project, jobs)
    if as_json:
        print(json.dumps({"jobs": [_job_json(j) for j in jobs]}, indent=2))
    else:
        for job in jobs:
            print(job.id)
        _err(f"queued {len(jobs)} job(s) for {jobs[0].target}: "
             + ", ".join(f"{j.name} ({j.id})" for j in jobs[:5])
             + (" …" if len(jobs) > 5 else ""))
    if wait:
        raise typer.Exit(_wait(project, [j.id for j in jobs]))


def _warn_if_nothing_can_run(project: Any, jobs: list[Job]) -> None:
    """A job no worker will take unless the user acts: say how to start one."""
    from .places import project_places, unplaceable_warning

    with _store(project) as store:
        warning = unplaceable_warning(project_places(project), jobs[0], store.workers())
    if warning:
        _err(warning)


def _wait(project: Any, ids: list[str]) -> int:
    from .waiting import JobWatch

    with _store(project) as store:
        watch = JobWatch(project, store, ids)
        try:
            if sys.stderr.isatty():
                from .render import wait_progress

                jobs = wait_progress(watch.read, watch.finished)
            else:
                from .render import wait_plain

                jobs = wait_plain(watch.read, watch.finished, _err)
        except KeyboardInterrupt:
            _err("stopped waiting; the job(s) keep running (see `orch status`)")
            return 130
        bad = watch.failures(jobs)
    for line in bad:
        _err(f"orch: {line}")
    for job in jobs:
        if job.state is S.PULLED:
            _err(f"{job.name}: model(s) in {', '.join(job.pulled_to)}")
    return 1 if bad else 0


# ---- looking at jobs --------------------------------------------------------------


@app.command()
def status(
    job: Annotated[Optional[str], typer.Argument(help="A job id, id prefix or name.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    all_jobs: Annotated[bool, typer.Option("--all", "-a", help="Every job, not only recent.")]
    = False,
    limit: Annotated[int, typer.Option(help="Finished jobs to show.")] = 20,
) -> None:
    """Show all jobs (active ones plus the most recent), or one job in detail."""
    project = _project()
    with _store(project) as store:
        if job:
            _status_one(project, store, job, as_json)
            return
        active = store.jobs(UNFINISHED)
        recent = store.jobs(TERMINAL, limit=None if all_jobs else limit, newest_first=True)
        jobs = sorted(active + recent, key=lambda j: j.seq)
        counts = store.counts()
    if as_json:
        print(json.dumps({"jobs": [_job_json(j) for j in jobs],
                          "counts": {s.value: n for s, n in counts.items()}}, indent=2))
        return
    if not jobs:
        print("no jobs yet: queue one with `orch submit SCRIPT`")
        return
    from .render import jobs_table

    print(jobs_table(jobs, colour=sys.stdout.isatty()))
    hidden = sum(counts.values()) - len(jobs)
    summary = ", ".join(f"{n} {s.value.lower()}" for s, n in sorted(counts.items()))
    print(f"\n{sum(counts.values())} job(s): {summary}"
          + (f"; {hidden} older not shown (--all)" if hidden > 0 else ""))


def _status_one(project: Any, store: Any, ref: str, as_json: bool) -> None:
    from .joblogs import read_log, tail_text
    from .render import job_detail

    job = store.resolve(ref)
    events, attempts = store.events(job.id), store.attempts(job.id)
    log_tail = tail_text(read_log(project, job) or "", 10)
    if as_json:
        doc = _job_json(job)
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
    from .joblogs import follow as follow_log
    from .joblogs import read_log

    project = _project()
    with _store(project) as store:
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
            _err(f"no log yet for {current.id} ({current.state.value})")


@app.command()
def top(
    until_done: Annotated[bool, typer.Option(
        "--until-done", help="Exit when no job is queued or running.")] = False,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
) -> None:
    """A live view of every run, local and remote (Ctrl-C to leave)."""
    from .render import jobs_table, live_table

    project = _project()
    store = _store(project)

    def read() -> list[Job]:
        jobs = store.jobs(UNFINISHED) + store.jobs(TERMINAL, limit=10,
                                               newest_first=True)
        return sorted(jobs, key=lambda j: j.seq)

    def done(jobs: list[Job]) -> bool:
        return until_done and not any(j.state in UNFINISHED for j in jobs)

    if once or not sys.stdout.isatty():
        jobs = read()
        print(jobs_table(jobs, colour=sys.stdout.isatty()), flush=True)
        last = [(j.id, j.state, j.progress.get("completed_epochs")) for j in jobs]
        while until_done and not once and not done(jobs):  # plain output: print on change
            time.sleep(1.0)
            jobs = read()
            now = [(j.id, j.state, j.progress.get("completed_epochs")) for j in jobs]
            if now != last:
                last = now
                print("\n" + jobs_table(jobs), flush=True)
        return
    try:
        live_table(read, done, title=f"orch — {project.root.name}")
    except KeyboardInterrupt:
        pass


# ---- acting on jobs ---------------------------------------------------------------


@app.command()
def cancel(jobs: Annotated[list[str], typer.Argument(help="Job ids, id prefixes or names.")]
           ) -> None:
    """Cancel jobs: queued ones at once, running ones as soon as their worker stops them."""
    from .control import cancel as do_cancel

    project = _project()
    with _store(project) as store:
        targets = [store.resolve(r) for r in jobs]
        for job in targets:
            print(f"{job.id} {job.name}: {do_cancel(store, job)}")
    _ensure_daemon(project)


@app.command()
def retry(jobs: Annotated[list[str], typer.Argument(help="Job ids, id prefixes or names.")]
          ) -> None:
    """Queue FAILED or CANCELLED jobs again (a new attempt, same snapshot)."""
    from .control import retry as do_retry

    project = _project()
    with _store(project) as store:
        targets = [store.resolve(r) for r in jobs]
        for job in targets:
            job = do_retry(store, job)
            print(f"{job.id} {job.name}: queued as attempt {job.attempt}")
    _ensure_daemon(project)


@app.command()
def pull(
    jobs: Annotated[Optional[list[str]], typer.Argument(
        help="Jobs to pull (default: every finished job not pulled yet).")] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="Also re-pull already pulled jobs.")]
    = False,
    to: Annotated[Optional[Path], typer.Option(help="Put outputs in DIR instead of their "
                                                    "destinations.")] = None,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Load each model with TensorFlow and run one prediction.")] = False,
) -> None:
    """Fetch sealed results, verify checksums, and place outputs atomically. Idempotent."""
    from .pull import pull_many

    project = _project()
    failures = pulled = 0
    with _store(project) as store:
        for job, outcome in pull_many(project, store, jobs, again=all_jobs, to=to):
            if isinstance(outcome, PullError):
                _err(f"orch: error: {outcome}")
                failures += 1
                continue
            pulled += 1
            rel = [str(p.relative_to(project.root)) if p.is_relative_to(project.root)
                   else str(p) for p in outcome]
            print(f"{job.id} {job.name}: {', '.join(rel)}")
            if verify:
                from .verify import verify_paths

                for line in verify_paths(outcome):
                    print(f"  verified {line}")
    if not pulled and not failures:
        print("nothing to pull")
    if failures:
        raise typer.Exit(1)


# ---- daemon and worker ------------------------------------------------------------


@daemon_app.command("start")
def daemon_start(
    foreground: Annotated[bool, typer.Option("--foreground", help="Run in this terminal.")]
    = False,
) -> None:
    """Start the daemon (if not running)."""
    from .daemon import main as daemon_main
    from .lifecycle import running_pid, start_background

    project = _project(create=True)
    if foreground:
        raise typer.Exit(daemon_main(["--project", str(project.root)]))
    pid = start_background(project)
    if pid is None:
        print(f"daemon already running (pid {running_pid(project)})")
        return
    deadline = time.monotonic() + 10
    while running_pid(project) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"daemon started (pid {pid})")


@daemon_app.command("stop")
def daemon_stop() -> None:
    """Stop the daemon. Running jobs go on; a restarted daemon picks them up."""
    from .lifecycle import stop

    pid = stop(_project())
    print("daemon was not running" if pid is None else f"daemon (pid {pid}) stopped")


@daemon_app.command("status")
def daemon_status() -> None:
    """Is the daemon running, and which workers does it know?"""
    from .lifecycle import running_pid

    project = _project()
    pid = running_pid(project)
    print(f"daemon: {'running (pid %d)' % pid if pid else 'not running'}")
    with _store(project) as store:
        workers = store.workers()
    for w in workers:
        gpu = f" gpu={w.gpu_name}" if w.gpu else ""
        job = f" job={w.job_id}" if w.job_id else ""
        print(f"worker {w.id}: {w.kind} on {w.host} pid={w.pid} {w.state}{gpu}{job}")
    if not workers:
        print("no live workers")


@auth_app.callback()
def auth(
    ctx: typer.Context,
    no_browser: Annotated[bool, typer.Option(
        "--no-browser", help="Print the sign-in address; paste back where it sends you.")]
    = False,
    service_account: Annotated[Optional[Path], typer.Option(
        help="Use this service-account key instead of signing in (Shared Drives).")] = None,
    client_secrets: Annotated[Optional[Path], typer.Option(
        help="Your OAuth client JSON (default: the drive_client_secrets setting).")] = None,
) -> None:
    """Sign in to Google Drive and store the credentials in .orch/ (mode 0600)."""
    if ctx.invoked_subcommand is not None:
        return
    from .hubs.drive.auth import sign_in, use_service_account, whoami

    project = _project(create=True)
    saved = project.drive_credentials
    if service_account is not None:
        use_service_account(service_account, saved)
        from .hubs.drive.auth import load_credentials

        creds = load_credentials(saved)
    else:
        creds = sign_in(client_secrets or project.drive_client_secrets, saved,
                        browser=not no_browser)
    who = whoami(creds)
    print(f"signed in as {who['email'] or who['name']} ({who['kind']}, scope {who['scope']}); "
          f"credentials in {saved}")


@auth_app.command("status")
def auth_status() -> None:
    """Who is signed in to Drive, and with which scope."""
    from .hubs.drive.auth import load_credentials, whoami

    project = _project()
    who = whoami(load_credentials(project.drive_credentials))
    print(f"signed in as {who['email'] or who['name']} ({who['kind']})")
    print(f"scope: {who['scope']}")
    print(f"credentials: {project.drive_credentials}")
    if project.settings.hub:
        print(f"project hub: {project.settings.hub}")


@app.command()
def colab(
    job: Annotated[Optional[str], typer.Option(
        help="Make the per-job notebook for this job (runs it, then stops).")] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the link in a browser.")]
    = False,
    idle: Annotated[str, typer.Option(help="The worker notebook stops after this long idle.")]
    = "30m",
    session: Annotated[str, typer.Option(help="Length of a Colab session.")] = "12h",
    launch: Annotated[bool, typer.Option(
        "--launch", help="Start a runtime with Google's `colab` CLI and run the notebook on "
                         "it (stopped when the worker is idle).")] = False,
    gpu: Annotated[Optional[str], typer.Option(help="GPU for --launch: T4, L4, A100, H100.")]
    = None,
    settings: Annotated[bool, typer.Option(
        "--settings", help="Print the notebook's settings cell (to paste into a notebook "
                           "opened by hand from colab_runners/) instead of publishing.")]
    = False,
) -> None:
    """Put the Colab worker notebook on the project's Drive hub and print its link."""
    from .models import parse_duration

    idle_minutes = parse_duration(idle, "--idle") / 60
    session_hours = parse_duration(session, "--session") / 3600
    if launch and gpu is not None:
        from .places.colab_launch import check_gpu

        check_gpu(gpu)
    project = _project()
    job_id = None
    if job:
        with _store(project) as store:
            job_id = store.resolve(job).id
    if settings:
        import hashlib

        from .places.colab_notebook import NotebookSettings, build_wheel

        if not project.settings.hub:
            raise NotConfiguredError('orch colab needs a Drive hub: set hub = "drive" in the '
                                     "project's settings and run `orch auth`")
        name, wheel = build_wheel()
        print(NotebookSettings(hub_folder=project.remote_hub_url.partition(":")[2],
                               wheel_name=name, wheel_sha=hashlib.sha256(wheel).hexdigest(),
                               job=job_id, idle_minutes=idle_minutes,
                               session_hours=session_hours).cell())
        return
    from .places.colab import publish

    published = publish(project, job_id, idle_minutes, session_hours)
    print(published.url)
    _err(f"{'per-job' if job_id else 'worker'} notebook on Drive: {published.key}; open the "
         "link, choose a GPU runtime, then Runtime → Run all")
    if launch:
        import secrets

        from .places.colab_launch import launch as start

        local = project.state_dir / "colab" / published.key.rpartition("/")[2]
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(published.text)
        name = start(local, f"orch-{project.root.name}-{secrets.token_hex(3)}", gpu,
                     project.logs_dir / "colab-launch.log")
        _err(f"launched Colab session {name} ({gpu or 'CPU'}); it stops when the worker is "
             f"idle; log: {project.logs_dir / 'colab-launch.log'}")
    if open_browser:
        import webbrowser

        webbrowser.open(published.url)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "help_option_names": []}, add_help_option=False)
def worker(ctx: typer.Context) -> None:
    """Run a worker: `orch worker --hub PATH [--name N] [--burst] [--idle-timeout S]`."""
    from .worker import main as worker_main

    raise typer.Exit(worker_main(list(ctx.args)))


@app.command()
def config() -> None:
    """Print the project's effective settings (files plus ORCH_* overrides)."""
    import dataclasses

    project = _project(create=False) if _has_project() else None
    from .config import Project, find_root, load_settings

    if project is None:
        root = find_root() or Path.cwd().resolve()
        project = Project(root, load_settings(root))
    print(f"project  {project.root}")
    for f in dataclasses.fields(project.settings):
        print(f"{f.name:20s} {getattr(project.settings, f.name)!r}")


def _has_project() -> bool:
    from .config import find_root

    root = find_root()
    return root is not None and (root / ".orch").is_dir()


def main() -> None:
    """Console entry point: run the app, turning OrchError into one clean line."""
    try:
        app()  # standalone: typer reports usage errors itself (exit 2) and exits
    except OrchError as exc:
        _err(f"orch: error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)

if __name__ == "__main__":
    main()
