"""`orch sandbox`: the remote path without Google (up, use, status, down).

The logic lives in :mod:`orchestrator.sandbox`; this module parses and prints.
"""

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from . import app

sandbox_app = typer.Typer(
    help="Try the remote (Colab/Drive) path without Google: a local Drive server and a "
         "stand-in Colab whose runtimes are local Jupyter kernels running orch's real "
         "notebook. Nothing here talks to Google.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")

DirOption = Annotated[Optional[Path], typer.Option(
    "--dir", help="The sandbox's state folder (default: $ORCH_SANDBOX_DIR, else "
                  "~/.local/state/orch/sandbox).")]

STANDINS = ("stand-ins: the Drive server is orch's local Drive v3 server (files in memory, "
            "gone when it stops); a \"Colab\" session is orch's real notebook executed on a "
            "local Jupyter kernel with a stand-in google.colab.")


def _box(folder: Optional[Path], create: bool = True) -> Any:
    from ..sandbox.box import Sandbox

    return Sandbox.at(folder, create)


@sandbox_app.command("up")
def sandbox_up(
    folder: DirOption = None,
    port: Annotated[int, typer.Option(
        "--port", min=0, max=65535,
        help="Port to listen on (0: the last one again when free, else any free one).")]
    = 0,
) -> None:
    """Start the local Drive server in the background (idempotent: a running one is
    reported as it is), then print how to point a project at it."""
    box = _box(folder)
    server, started = box.up(port=port)
    if started:
        print(f"started the sandbox: a local Drive server at {server.url} (pid {server.pid})")
    else:
        print(f"the sandbox is already running: Drive server at {server.url} "
              f"(pid {server.pid})")
    print(f"state folder: {box.folder}")
    print(STANDINS)
    where = "" if folder is None else f" --dir {box.folder}"
    print("point a project at it (in the project's folder; `orch init` first if it is "
          "not one yet):\n"
          f"    orch sandbox use{where} --colab-workers 2 --colab-startup 20s\n"
          f"stop it with `orch sandbox down{where}`")


@sandbox_app.command("use")
def sandbox_use(
    folder: DirOption = None,
    colab_workers: Annotated[Optional[int], typer.Option(
        "--colab-workers", min=0,
        help="Let the daemon launch up to N stand-in Colab sessions itself.")] = None,
    colab_startup: Annotated[Optional[str], typer.Option(
        "--colab-startup",
        help="How long a launched session takes to join, for placement (e.g. 20s).")] = None,
) -> None:
    """Point the project here at the running sandbox: Drive credentials for the local
    server (your Google ones are kept), hub/drive_url/drive_credentials/colab_cli in
    orch.toml, the project's key as the stand-in Colab's secret ORCH_HUB_KEY.
    Idempotent. To go back to Google, remove those keys from orch.toml."""
    from ..models import parse_duration
    from ..sandbox.point import use
    from . import project_here

    startup = parse_duration(colab_startup, "--colab-startup") if colab_startup else None
    box = _box(folder)
    box.require()  # before the project gets its .orch/
    project = project_here(create=True)
    values = use(project, box, colab_workers, startup)
    print(f"{project.root} now uses the sandbox at {values['drive_url']}:")
    for key, value in values.items():
        print(f"    {key} = {value!r}" if key != "colab_cli" else
              f"    {key} = (orch's stand-in colab CLI for {box.folder})")
    print("jobs placed on Colab (`--on colab`, or `--on auto` with colab_workers) now run "
          "in stand-in sessions on local kernels; restart a running daemon "
          "(`orch daemon stop`) so it reads the new settings")


@sandbox_app.command("status")
def sandbox_status(folder: DirOption = None) -> None:
    """What the sandbox runs: the Drive server and the stand-in Colab sessions."""
    box = _box(folder, create=False)
    server = box.server()
    if server is None:
        print(f"the sandbox is not running (state folder {box.folder})")
    else:
        print(f"Drive server: {server.url} (pid {server.pid}); state folder {box.folder}")
    sessions = box.sessions()
    for s in sessions:
        if s.live or s.state == "new":
            print(f"Colab stand-in session {s.name}: {'running' if s.live else 'new'}"
                  + (f" (kernel pid {s.kernel_pid})" if s.live and s.kernel_pid else ""))
    ended = sum(1 for s in sessions if not s.live and s.state != "new")
    if ended:
        print(f"{ended} ended Colab stand-in session(s) (folders in {box.sessions_dir})")


@sandbox_app.command("down")
def sandbox_down(folder: DirOption = None) -> None:
    """Stop the stand-in Colab sessions and the Drive server (idempotent). The server
    forgets every file; the next `up` takes the same port, so projects pointed at it
    keep working."""
    box = _box(folder, create=False)
    server, sessions = box.down()
    for name in sessions:
        print(f"stopped Colab stand-in session {name}")
    if server is None:
        print("the sandbox's Drive server was not running")
    else:
        print(f"stopped the sandbox's Drive server (pid {server.pid})")
