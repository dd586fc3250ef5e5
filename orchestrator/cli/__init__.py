"""The `orch` command line. Thin: each command parses, calls one service, prints.

Errors a user can cause are OrchError: printed as one line, exit code 2 for bad
usage, 1 otherwise. Never imports TensorFlow or Google clients at start-up.
Commands live in :mod:`.jobs` (submit, status, logs, top, cancel, retry, pull),
:mod:`.curves` (compare, tensorboard) and :mod:`.manage` (init, daemon, worker, auth,
colab, config); this module holds the
app and what they share. (No ``from __future__ import annotations``: typer reads
the annotations at run time.)
"""

import sys
from collections.abc import Callable
from typing import Any

import typer

from ..errors import OrchError
from ..logs import get_logger
from ..models import Job

log = get_logger("orchestrator.cli")

app = typer.Typer(
    name="orch",
    help="Queue TensorFlow training jobs; run them locally (or remotely); get the models back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,  # plain help; a docstring's line breaks are re-flowed
)
daemon_app = typer.Typer(help="Start, stop or inspect the background daemon.",
                         no_args_is_help=True)
app.add_typer(daemon_app, name="daemon")
auth_app = typer.Typer(help="Sign in to Google Drive (for the Drive hub).",
                       invoke_without_command=True)
app.add_typer(auth_app, name="auth")


def project_here(create: bool = False) -> Any:
    from ..config import open_project

    return open_project(create=create)


def open_store(project: Any) -> Any:
    from ..store import Store

    return Store(project.db_path)


def err(message: str) -> None:
    print(message, file=sys.stderr)


def job_json(job: Job) -> dict[str, Any]:
    """A job as `--json` prints it (``expected_finish``: Unix time, or null)."""
    import time

    from ..render import expected_end, planned

    return {
        "id": job.id, "name": job.name, "state": job.state.value, "attempt": job.attempt,
        "target": job.target, "worker": job.worker_id, "script": job.script,
        "args": list(job.args), "progress": job.progress, "exit_code": job.exit_code,
        "error": job.error, "submitted_at": job.submitted_at, "started_at": job.started_at,
        "finished_at": job.finished_at, "pulled_to": list(job.pulled_to),
        "gpu_mem_mb": job.gpu_mem_mb, "planned_on": planned(job)[0],
        "expected_finish": expected_end(job, time.time()),
    }


def ensure_daemon(project: Any) -> int | None:
    """Start the daemon or wake it; the pid of a daemon started now."""
    from ..lifecycle import ensure_running

    pid = ensure_running(project)
    if pid:
        err(f"started the orch daemon (pid {pid}); log: {project.logs_dir / 'daemon.log'}")
    return pid


def main() -> None:
    """Run the app, turning every error a user can meet into one clean line: orch's
    own, a store SQLite cannot use, a file system that refuses (read-only, full)."""
    import sqlite3

    try:
        app()  # standalone: typer reports usage errors itself (exit 2) and exits
    except OrchError as exc:
        err(f"orch: error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except sqlite3.Error as exc:
        from ..schema import damaged

        err(f"orch: error: {damaged(_store_path(), exc)}")
        sys.exit(1)
    except OSError as exc:
        from ..errors import is_disk_full

        where = f": {exc.filename}" if exc.filename else ""
        what = "the disk is full" if is_disk_full(exc) else (exc.strerror or str(exc))
        err(f"orch: error: {what}{where}")
        sys.exit(1)


def _store_path() -> Any:
    from pathlib import Path

    from ..config import STATE_DIR, find_root

    return (find_root() or Path.cwd()) / STATE_DIR / "state.db"


def list_checked(registry: Any, as_json: bool, empty: str,
                 line: Callable[[Any], str], ok: Callable[[Any], str]) -> None:
    """`orch hosts list`, `orch clusters list`: each entry (``line``) and what its last
    check found (``ok`` words a good one), or JSON of both."""
    import json
    from dataclasses import asdict

    rows = [(e, registry.status(e.name)) for e in registry.all()]
    if as_json:
        print(json.dumps([{**asdict(e), "status": asdict(s) if s else None} for e, s in rows],
                         indent=2))
        return
    if not rows:
        print(empty)
    for entry, status in rows:
        print(f"{line(entry)} {checked(status, ok)}")


def checked(status: Any, ok: Callable[[Any], str]) -> str:
    """One line of what a check found, or why the place takes no work."""
    import time

    from ..models import format_duration

    if status is None:
        return "not checked yet"
    when = f"checked {format_duration(time.time() - status.checked_at)} ago"
    if status.problem:
        return f"PROBLEM: {status.problem} ({when})"
    return f"ok: {ok(status)} ({when})"


def refuse_if_held(target: str, what: str) -> None:
    """A place (``target``: ``ssh:NAME``, ``ray:NAME``) is not removed while jobs need
    it: queued for it, running there, or waiting there to be pulled (UsageError)."""
    from ..errors import UsageError
    from ..models import UNFINISHED

    with open_store(project_here()) as store:
        held = [j for j in store.jobs(UNFINISHED)
                if target in (j.target, j.hub if j.worker_id else None)]
    if held:
        names = ", ".join(f"{j.name} ({j.id}, {j.state.value})" for j in held[:5])
        raise UsageError(f"{what} still has {len(held)} job(s): {names}"
                         f"{' …' if len(held) > 5 else ''}; let them finish and be pulled, "
                         "cancel them (`orch cancel`), or remove it anyway with --force")


# importing them registers their commands, in this order in `orch --help`
# isort: off
from . import jobs, results  # noqa: E402,F401
from . import curves, manage  # noqa: E402,F401
from . import clusters, hosts, sandbox  # noqa: E402,F401
# isort: on
