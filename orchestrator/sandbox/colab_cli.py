"""A STAND-IN for Google's `colab` CLI: the "Colab runtime" is a local Jupyter kernel.

``python -m orchestrator.sandbox.colab_cli [--dir SANDBOX] COMMAND`` answers the
three commands orch's Colab place uses (:mod:`orchestrator.places.colab_launch`):

- ``new -s NAME [--gpu G]``: make a session folder in the sandbox (no GPU is given:
  the kernel gets whatever this machine has);
- ``exec -s NAME -f NOTEBOOK``: execute the real notebook, cell by cell, with
  nbclient on a local kernel whose environment is what a Colab kernel would give it
  for the sandbox: a stand-in ``google.colab`` (sign-in hands over Application
  Default Credentials for the local Drive server; the secrets are those of
  ``orch sandbox use``), ``ORCH_DRIVE_ROOT_URL`` set to the local server, and its
  own pip target and ``WORK_DIR`` inside the session folder. Runs until the
  notebook ends (the worker idles out) or the session is stopped; like the real one
  it writes NOTEBOOK_output.ipynb (the outputs) beside the notebook;
- ``stop -s NAME``: stop the session's kernel (its worker and job) and its ``exec``.

``list`` (or ``sessions``) prints the sessions, ``version`` prints ``Version: X``.
Nothing here talks to Google. ``orch sandbox use`` sets the ``colab_cli`` setting to
this command.

It behaves as Google's CLI does where orch depends on it (:mod:`orchestrator.places.
colab_launch` lists those behaviours), each set by an environment variable so tests
can play every case:

- ``exec`` cuts a cell that runs longer than its timeout: ``--timeout S`` (0: none),
  default ``$ORCH_SANDBOX_COLAB_EXEC_TIMEOUT`` or 30 s (the real default);
- the kernel has no page to ask for consent on: ``google.colab.auth.
  authenticate_user()`` fails there (the real kernel waits until the cell is cut);
- version ``$ORCH_SANDBOX_COLAB_VERSION`` (default 0.8.0); before 0.6.0 ``exec``
  has no ``--timeout`` and refuses it, as the real one did;
- it refuses to run on a Python older than ``$ORCH_SANDBOX_COLAB_NEEDS_PYTHON``
  (default 3.11, orch's own: the real CLI needs 3.13);
- with ``$ORCH_SANDBOX_COLAB_SIGNED_IN=0`` it is not signed in: every command but
  ``version`` prints a Google sign-in link and waits for a code on standard input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from ..procgroup import start_ticks
from .box import Sandbox, Session

STANDIN = Path(__file__).resolve().parent / "standin"  # holds google/colab/
EXEC_TIMEOUT = 30.0  # seconds: the real `colab exec`'s default cell timeout
TIMEOUT_SINCE = (0, 6, 0)  # the first version with `exec --timeout`


def version() -> tuple[int, ...]:
    raw = os.environ.get("ORCH_SANDBOX_COLAB_VERSION", "0.8.0")
    return tuple(int(x) for x in raw.split("."))


def needs_python() -> tuple[int, ...]:
    return tuple(int(x) for x in os.environ.get("ORCH_SANDBOX_COLAB_NEEDS_PYTHON",
                                                "3.11").split("."))


def sign_in_prompt() -> int:
    """What a CLI that is not signed in does: print the link, wait for the code."""
    print("Go to the following link in your browser, and complete the sign-in prompts:\n\n"
          "    https://accounts.google.com/o/oauth2/auth?response_type=code&client_id="
          "colab-cli-standin&token_usage=remote\n", flush=True)
    print("Once finished, enter the verification code provided in your browser: ", end="",
          flush=True)
    code = sys.stdin.readline().strip()
    if not code:
        print("\ncolab (sandbox stand-in): no authorization code given", file=sys.stderr)
        return 1
    print("colab (sandbox stand-in): signing in is not possible here", file=sys.stderr)
    return 1


def kernel_env(box: Sandbox, folder: Path, url: str) -> dict[str, str]:
    """The environment of a session's kernel: this one without ORCH_* settings and
    Google credentials, plus what a Colab kernel would have for the sandbox."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ORCH_") and k != "GOOGLE_APPLICATION_CREDENTIALS"}
    site = folder / "site"
    env.update({
        "ORCH_SANDBOX_ADC": str(folder / "adc.json"),
        "ORCH_DRIVE_ROOT_URL": url,
        "ORCH_NOTEBOOK_PIP_TARGET": str(site),
        # Colab's own packages (here: google.colab) and its site-packages (here: the
        # session's pip target, where the notebook installs orch) for the kernel and
        # the jobs it starts
        "PYTHONPATH": os.pathsep.join([str(STANDIN), str(site)]),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "ORCH_SANDBOX_CONSENT": "none",  # `colab exec` shows no consent dialog
    })
    env.update({f"ORCH_SANDBOX_SECRET_{k}": v for k, v in box.secrets().items()})
    return env


def write_adc(box: Sandbox, path: Path) -> None:
    """An ``authorized_user`` ADC file for the local server with a ready token (as
    Colab's sign-in hands one over); its ``token_uri`` is the local server's, so a
    refresh never reaches Google."""
    from ..atomic import write_atomic

    write_atomic(path, json.dumps({
        "type": "authorized_user", "client_id": "sandbox-client.apps.googleusercontent.com",
        "client_secret": "sandbox-secret", "refresh_token": "1//sandbox-refresh",
        "token": box.token(ttl=24 * 3600), "expiry": "2099-01-01T00:00:00Z",
        # a refresh goes to the local server, never to Google's token endpoint
        "token_uri": box.require().url + "token"}), mode=0o600)


def set_param(nb: Any, name: str, value: Any) -> None:
    """Set ``NAME = value`` in the notebook's settings cell (the one that has it)."""
    for cell in nb.cells:
        lines = cell.source.splitlines()
        if cell.cell_type == "code" and any(ln.startswith(f"{name} = ") for ln in lines):
            cell.source = "\n".join(f"{name} = {value!r}" if ln.startswith(f"{name} = ")
                                    else ln for ln in lines)
            return


def cmd_new(box: Sandbox, name: str, gpu: str | None) -> int:
    box.require()
    old = box.session(name)
    if old is not None and old.live:
        print(f"colab (sandbox stand-in): session {name} already exists", file=sys.stderr)
        return 1
    folder = box.session_dir(name)
    (folder / "content").mkdir(parents=True, exist_ok=True)
    write_adc(box, folder / "adc.json")
    box.save_session(Session(name=name, gpu=gpu, state="new", created_at=time.time()))
    print(f"stand-in Colab session {name}: a local kernel (asked for GPU {gpu or 'none'}; "
          f"it gets this machine's), folder {folder}")
    return 0


def cmd_exec(box: Sandbox, name: str, notebook: Path, timeout: float) -> int:
    import nbclient
    import nbformat

    session = box.session(name)
    if session is None:
        print(f"colab (sandbox stand-in): no session {name}: run `new -s {name}` first",
              file=sys.stderr)
        return 1
    server = box.require()
    folder = box.session_dir(name)
    nb = nbformat.read(str(notebook), as_version=4)
    set_param(nb, "WORK_DIR", str(folder / "content"))
    session = dataclasses.replace(session, state="running", pid=os.getpid(),
                                  pid_start=start_ticks(os.getpid()))
    box.save_session(session)

    def record_kernel(**_: Any) -> None:
        pid = getattr(getattr(client.km, "provisioner", None), "pid", None)
        box.save_session(dataclasses.replace(
            session, kernel_pid=pid, kernel_start=None if pid is None else start_ticks(pid)))

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, terminate)
    env = kernel_env(box, folder, server.url)
    env["ORCH_RUNTIME_STARTED"] = str(session.created_at)  # the runtime began at `new`
    os.environ.clear()
    os.environ.update(env)
    client = nbclient.NotebookClient(nb, timeout=math.ceil(timeout) if timeout > 0 else None,
                                     kernel_name="python3",
                                     on_notebook_start=record_kernel,
                                     resources={"metadata": {"path": str(folder / "content")}})
    print(f"stand-in Colab session {name}: running {notebook.name} on a local kernel",
          flush=True)
    code = 0
    try:
        client.execute()
    except nbclient.exceptions.CellTimeoutError:
        print(f"TimeoutError: a cell ran past the exec timeout ({timeout:g} s; pass "
              "--timeout)", flush=True)
        code = 1
    except nbclient.exceptions.CellExecutionError as exc:
        print(f"a cell failed: {str(exc).strip().splitlines()[-1:]}", flush=True)
        code = 1
    finally:
        from ..atomic import write_atomic

        # it holds what the notebook held (a launched copy's sign-in): this user's only
        write_atomic(folder / "executed.ipynb", nbformat.writes(nb), mode=0o600)
        # as the real exec does: NOTEBOOK_output.ipynb beside the notebook
        nbformat.write(nb, str(notebook.with_name(notebook.stem + "_output.ipynb")))
        for cell in nb.cells:
            for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
                text = out.get("text") or out.get("ename", "")
                if text:
                    print(text.rstrip(), flush=True)
    return code


def cmd_stop(box: Sandbox, name: str) -> int:
    session = box.stop_session(name)
    if session is None:
        print(f"colab (sandbox stand-in): no session {name}", file=sys.stderr)
        return 1
    print(f"stand-in Colab session {name} stopped")
    return 0


def cmd_list(box: Sandbox) -> int:
    for s in box.sessions():
        print(f"{s.name}\t{s.state if s.live or s.state == 'new' else 'stopped'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m orchestrator.sandbox.colab_cli",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=None,
                   help="the sandbox folder (default: $ORCH_SANDBOX_DIR or "
                        "~/.local/state/orch/sandbox)")
    sub = p.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="make a session")
    new.add_argument("-s", "--session", required=True)
    new.add_argument("--gpu", default=None)
    run = sub.add_parser("exec", help="run a notebook on a session's local kernel")
    run.add_argument("-s", "--session", required=True)
    run.add_argument("-f", "--file", type=Path, required=True)
    if version() >= TIMEOUT_SINCE:
        run.add_argument("--timeout", type=float, default=float(os.environ.get(
            "ORCH_SANDBOX_COLAB_EXEC_TIMEOUT", EXEC_TIMEOUT)),
            help="seconds a cell may run (0: no limit)")
    stop = sub.add_parser("stop", help="stop a session")
    stop.add_argument("-s", "--session", required=True)
    sub.add_parser("list", help="the sessions")
    sub.add_parser("sessions", help="the sessions")
    sub.add_parser("version", help="this CLI's version")
    if sys.version_info[:2] < needs_python()[:2]:
        print(f"colab (sandbox stand-in): this tool needs Python "
              f"{'.'.join(map(str, needs_python()))} or newer; this is "
              f"{sys.version_info.major}.{sys.version_info.minor}", file=sys.stderr)
        return 1
    a = p.parse_args(argv)
    from ..errors import OrchError

    if a.command == "version":
        print(f"Version: {'.'.join(map(str, version()))}")
        return 0
    if os.environ.get("ORCH_SANDBOX_COLAB_SIGNED_IN", "1") == "0":
        return sign_in_prompt()
    try:
        box = Sandbox.at(a.dir)
        if a.command == "new":
            return cmd_new(box, a.session, a.gpu)
        if a.command == "exec":
            return cmd_exec(box, a.session, a.file, getattr(a, "timeout", EXEC_TIMEOUT))
        if a.command == "stop":
            return cmd_stop(box, a.session)
        return cmd_list(box)
    except OrchError as exc:
        print(f"colab (sandbox stand-in): {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
