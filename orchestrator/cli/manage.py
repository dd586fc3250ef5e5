"""`orch` commands about the project and its machinery: init, config, the daemon,
workers, Drive sign-in and Colab."""

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import NotConfiguredError
from . import app, auth_app, daemon_app, err, open_store, project_here

# ---- the project ---------------------------------------------------------------


@app.command()
def init(
    force: Annotated[bool, typer.Option(
        "--force", help="Also in your home folder or /, which orch refuses otherwise.")]
    = False,
    reset: Annotated[bool, typer.Option(
        "--reset", help="Start the project's state over: the store (jobs, history) is "
                        "moved aside to .orch/reset-TIME/, nothing is deleted.")] = False,
) -> None:
    """Make the current folder an orch project (creates .orch/, private to you). Idempotent."""
    from ..config import Project, find_root, load_settings, refuse_as_root
    from ..errors import ProjectError

    found = find_root()
    if found is not None and (found / ".orch").is_dir():
        if reset:
            from ..schema import reset_store

            kept = reset_store(found / ".orch" / "state.db")
            print(f"the old store is in {kept}; {found} starts over with no jobs")
            return
        print(f"already an orch project: {found}")
        return
    root = Path.cwd().resolve()
    refused = refuse_as_root(root)
    if refused and not force:
        raise ProjectError(f"{refused}: orch keeps projects in their own folders (cd into "
                           "yours), or run `orch init --force` to make it one anyway")
    project = Project(root, load_settings(root))
    project.init()
    print(f"initialised {project.root}")


# ---- daemon and worker ------------------------------------------------------------


@daemon_app.command("start")
def daemon_start(
    foreground: Annotated[bool, typer.Option("--foreground", help="Run in this terminal.")]
    = False,
) -> None:
    """Start the daemon (if not running)."""
    from ..daemon import main as daemon_main
    from ..lifecycle import running_pid, start_background

    project = project_here(create=True)
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
    from ..lifecycle import stop

    pid = stop(project_here())
    print("daemon was not running" if pid is None else f"daemon (pid {pid}) stopped")


@daemon_app.command("status")
def daemon_status() -> None:
    """Is the daemon running, and which workers does it know?"""
    from ..lifecycle import running_pid

    project = project_here()
    pid = running_pid(project)
    print(f"daemon: {f'running (pid {pid})' if pid else 'not running'}")
    with open_store(project) as store:
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
    """Sign in to Google Drive and store the credentials in .orch/ (mode 0600), with
    the scope of the drive_scope setting (drive, or drive.file: only files orch
    creates with this OAuth client; Colab workers then cannot see the hub). Run it
    again when the sign-in lapses (`orch auth status` says when)."""
    if ctx.invoked_subcommand is not None:
        return
    from ..hubs.drive.auth import (
        lapse_text,
        scope_url,
        sign_in,
        signed_in_at,
        use_service_account,
        whoami,
    )

    project = project_here(create=True)
    saved = project.drive_credentials
    scope = scope_url(project.settings.drive_scope)
    if service_account is not None:
        use_service_account(service_account, saved)
        from ..hubs.drive.auth import load_credentials

        creds = load_credentials(saved)
    else:
        creds = sign_in(client_secrets or project.drive_client_secrets, saved,
                        browser=not no_browser, scope=scope)
    who = whoami(creds, project.drive_url)
    print(f"signed in as {who['email'] or who['name']} ({who['kind']}, scope {who['scope']}); "
          f"credentials in {saved}")
    if service_account is None:
        print(lapse_text(signed_in_at(saved)))
    if project.settings.drive_scope.strip() == "drive.file":
        err("scope drive.file: orch sees only the files it creates with this OAuth client; "
            "Colab notebooks sign in as another client and will not see the hub (use "
            'drive_scope = "drive" for Colab workers)')


@auth_app.command("status")
def auth_status() -> None:
    """Who is signed in to Drive, with which scope, and when the sign-in lapses if
    your OAuth app is in Testing status (Google ends those after 7 days). Exit 1 with
    one line when the sign-in has expired or was revoked: run `orch auth` again."""
    from ..hubs.drive.auth import lapse_text, load_credentials, signed_in_at, whoami

    project = project_here()
    who = whoami(load_credentials(project.drive_credentials), project.drive_url)
    print(f"signed in as {who['email'] or who['name']} ({who['kind']})")
    print(f"scope: {who['scope']}")
    print(f"credentials: {project.drive_credentials}")
    if who["kind"] == "service account":
        print("a service account's sign-in does not lapse")
    else:
        print(lapse_text(signed_in_at(project.drive_credentials)))
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
    gpu: Annotated[Optional[str], typer.Option(help="GPU for --launch: T4, L4, G4, A100, H100.")]
    = None,
    settings: Annotated[bool, typer.Option(
        "--settings", help="Print the notebook's settings cell (to paste into a notebook "
                           "opened by hand from colab_runners/) instead of publishing.")]
    = False,
    key: Annotated[bool, typer.Option(
        "--key", help="Print the project's key, for the Colab secret ORCH_HUB_KEY (workers "
                      "run only jobs signed with it; it never goes to Drive).")] = False,
) -> None:
    """Put the Colab worker notebook on the project's Drive hub and print its link."""
    from ..identity import load_identity
    from ..models import parse_duration

    if key:
        print(load_identity(project_here().state_dir).key)
        return

    idle_minutes = parse_duration(idle, "--idle") / 60
    session_hours = parse_duration(session, "--session") / 3600
    if launch and gpu is not None:
        from ..places.colab_launch import check_gpu

        check_gpu(gpu)
    project = project_here()
    job_id = None
    if job:
        with open_store(project) as store:
            job_id = store.resolve(job).id
    if settings:
        import hashlib

        from ..places.colab_notebook import NotebookSettings, build_wheel

        if not project.settings.hub:
            raise NotConfiguredError('orch colab needs a Drive hub: set hub = "drive" in the '
                                     "project's settings and run `orch auth`")
        name, wheel = build_wheel()
        print(NotebookSettings(hub_folder=project.remote_hub_url.partition(":")[2],
                               shared_drive=project.settings.drive_shared_drive or "",
                               wheel_name=name, wheel_sha=hashlib.sha256(wheel).hexdigest(),
                               job=job_id, idle_minutes=idle_minutes,
                               session_hours=session_hours).cell())
        return
    from ..places.colab import publish

    if launch:  # what the colab CLI lacks, in one line, before anything is published
        from ..places.colab_launch import check_cli

        check_cli(project.settings.colab_cli)
    published = publish(project, job_id, idle_minutes, session_hours)
    print(published.url)
    err(f"{'per-job' if job_id else 'worker'} notebook on Drive: {published.where}; open the "
        "link, choose a GPU runtime, then Runtime → Run all. It runs only this project's "
        "jobs: add the Colab secret ORCH_HUB_KEY once (the key icon in Colab's left bar; "
        "`orch colab --key` prints the value)")
    if launch:
        from ..places.colab import launch_session

        name = launch_session(project, gpu, published)
        err(f"launched Colab session {name} ({gpu or 'CPU'}); it stops when the worker is "
            f"idle; log: {project.logs_dir / 'colab-launch.log'}")
    if open_browser:
        import webbrowser

        webbrowser.open(published.url)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "help_option_names": []}, add_help_option=False)
def worker(ctx: typer.Context) -> None:
    """Run a worker: `orch worker --hub PATH [--name N] [--burst] [--idle-timeout S]`."""
    from ..worker import main as worker_main

    raise typer.Exit(worker_main(list(ctx.args)))


@app.command()
def config(
    as_json: Annotated[bool, typer.Option(
        "--json", help="Machine values (seconds, null for auto) with their sources.")]
    = False,
) -> None:
    """Print the project's effective settings: each value (durations like 5m, auto
    with what it found) and where it came from: default, orch.toml, pyproject.toml
    ([tool.orch]) or an ORCH_<NAME> environment variable (which wins)."""
    from ..config import Project, find_root, load_settings
    from ..config_view import render_json, render_text, setting_rows

    root = find_root() or Path.cwd().resolve()
    project = Project(root, load_settings(root))
    rows = setting_rows(project)
    print(render_json(project, rows) if as_json else render_text(project, rows))
