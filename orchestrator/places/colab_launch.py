"""Starting a Colab runtime without the browser, through Google's `colab` CLI
(google-colab-cli), as that tool behaves:

- **its own Python**: it needs Python 3.13 or newer (its ``requires-python``), newer
  than orch's, so it cannot live in orch's environment: install it on its own
  (``uv tool install google-colab-cli``, which fetches a Python 3.13 if need be);
- **its version**: ``colab version`` prints ``Version: X``; orch needs
  :data:`MIN_VERSION` (0.6.0, the first with ``exec --timeout``);
- **its sign-in**: the first command of a CLI not signed in prints a Google link and
  waits for a pasted code (``~/.config/colab-cli/token.json`` keeps the grant). orch
  asks ``colab sessions`` with no input: a CLI that wants a code is "not signed in";
- **exec cuts a cell** after a short default timeout (10 s, 30 s in later releases,
  from jupyter-kernel-client). The worker cell runs for hours, so orch passes
  ``--timeout`` = the session's length plus a margin;
- **no consent dialog**: ``google.colab.auth.authenticate_user()`` asks the Colab
  page for consent, and `exec` has no page to show it on (the kernel waits until the
  cell is cut). The CLI's own grant is no way round: its scopes give Drive only the
  files it made itself (``drive.file``). So the launched copy of the notebook signs
  in with orch's own Drive sign-in (``orch auth``: the saved grant, or a
  service-account key), put in its ``DRIVE_CREDENTIALS`` setting. That copy is
  written 0600 under ``.orch/colab/`` and sent to your runtime only; the notebook on
  Drive never carries it.

:func:`check_cli` checks all that (one line naming what is missing); ``launch()``
provisions a session (``colab new -s NAME [--gpu T4]``) and hands the notebook to a
detached helper (``python -m orchestrator.places.colab_launch``) that runs it
(``colab exec -s NAME -f NOTEBOOK --timeout S``: the worker runs until idle) and then
releases the session (``colab stop -s NAME``), so an idle runtime holds no GPU.
Every call runs with no standard input: a CLI that asks something fails instead of
waiting forever.

The command is the ``colab_cli`` setting (default ``colab``): a name on PATH, a path,
or a command line (``orch sandbox use`` points it at orch's stand-in, which enforces
the behaviours above and runs the notebook on a local kernel;
:mod:`orchestrator.sandbox.colab_cli`).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import LaunchError, NotConfiguredError

CLI = "colab"
GPUS = ("T4", "L4", "G4", "A100", "H100")  # what `colab new --gpu` offers
MIN_VERSION = (0, 6, 0)  # google-colab-cli 0.6.0: the first with `exec --timeout`
PYTHON = "3.13"  # google-colab-cli's requires-python
INSTALL = "uv tool install google-colab-cli"
MARGIN = 600.0  # seconds of exec timeout beyond the session's length
ASK_TIMEOUT = 120.0  # seconds for `colab version` / `colab sessions`


@dataclass(frozen=True)
class ColabCli:
    """A colab CLI fit for launching: its command line and version."""

    command: tuple[str, ...]
    version: str


def available(cli: str = CLI) -> list[str] | None:
    """The colab CLI's command line (``cli`` split as a shell would, its program found
    on PATH or as a path), or None when there is no such program."""
    try:
        words = shlex.split(cli)
    except ValueError:
        return None
    exe = shutil.which(words[0]) if words else None
    return [exe, *words[1:]] if exe else None


def check_gpu(gpu: str) -> None:
    """NotConfiguredError unless ``gpu`` is a GPU type Colab offers."""
    if gpu not in GPUS:
        raise NotConfiguredError(f"--gpu {gpu}: choose one of {', '.join(GPUS)}")


def _ask(exe: list[str], *args: str) -> tuple[int, str]:
    """Run the CLI with no input; (exit status, its output)."""
    try:
        done = subprocess.run([*exe, *args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=ASK_TIMEOUT)
    except subprocess.TimeoutExpired:
        return 124, f"`colab {' '.join(args)}` did not answer in {ASK_TIMEOUT:.0f} s"
    except OSError as exc:
        return 126, str(exc)
    return done.returncode, (done.stdout or "") + (done.stderr or "")


def _last(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def parse_version(text: str) -> tuple[int, ...] | None:
    """``(0, 8, 0)`` from ``colab version``'s ``Version: 0.8.0`` (None if absent)."""
    m = re.search(r"Version:\s*v?(\d+(?:\.\d+)*)", text)
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def check_cli(cli: str = CLI) -> ColabCli:
    """The colab CLI named ``cli``, checked: installed, runs on its Python, new
    enough, signed in. NotConfiguredError with one line saying what is missing."""
    exe = available(cli)
    setting = f"{cli!r}, the colab_cli setting"
    if exe is None:
        raise NotConfiguredError(
            f"the colab command-line tool ({setting}) is not installed: `{INSTALL}` (it "
            f"needs Python {PYTHON} or newer); or open the notebook link instead")
    code, out = _ask(exe, "version")
    if code != 0:
        if "python" in out.lower() or "SyntaxError" in out:
            raise NotConfiguredError(
                f"the colab command-line tool ({setting}) does not run on its Python "
                f"({_last(out)}): it needs Python {PYTHON} or newer; reinstall it with "
                f"`uv tool install --python {PYTHON} google-colab-cli`")
        raise NotConfiguredError(f"`colab version` failed ({setting}): {_last(out)}")
    version = parse_version(out)
    shown = ".".join(map(str, version)) if version else _last(out)
    if version is None or version < MIN_VERSION:
        raise NotConfiguredError(
            f"the colab command-line tool is too old ({shown}): orch needs "
            f"{'.'.join(map(str, MIN_VERSION))} or newer (for `exec --timeout`); upgrade "
            "it: `uv tool upgrade google-colab-cli`")
    code, out = _ask(exe, "sessions")
    if code != 0 or "accounts.google.com" in out or "authorization code" in out.lower():
        raise NotConfiguredError(
            f"the colab command-line tool is not signed in ({_last(out)}): run `colab "
            "sessions` once in a terminal and paste the code it asks for")
    return ColabCli(tuple(exe), shown)


def drive_sign_in(credentials: Path) -> str:
    """What the launched notebook signs in to Drive with (its DRIVE_CREDENTIALS):
    orch's own Drive sign-in at ``credentials`` as an ``authorized_user`` document
    (client, refresh token, token endpoint), or the service-account key as it is."""
    try:
        data = json.loads(credentials.read_text())
    except FileNotFoundError:
        raise NotConfiguredError(f"not signed in to Drive ({credentials} missing): run "
                                 "`orch auth`") from None
    except (OSError, ValueError) as exc:
        raise NotConfiguredError(f"unreadable Drive credentials {credentials}: {exc}") \
            from None
    if data.get("type") == "service_account":
        return json.dumps(data)
    info = {k: data.get(k) for k in ("client_id", "client_secret", "refresh_token",
                                     "token_uri")}
    missing = [k for k, v in info.items() if not v]
    if missing:
        raise NotConfiguredError(f"your Drive sign-in ({credentials}) has no "
                                 f"{', '.join(missing)}: run `orch auth` again")
    return json.dumps({"type": "authorized_user", **info})


def exec_timeout(session_hours: float) -> float:
    """The ``exec --timeout`` for a worker notebook: the session's length and a margin
    (the worker ends by itself before that; the session never lives longer)."""
    return session_hours * 3600 + MARGIN


def launch(notebook: Path, name: str, gpu: str | None, log: Path, cli: ColabCli,
           session_hours: float = 12.0) -> str:
    """Provision a Colab session with the (checked) colab CLI ``cli`` and run
    ``notebook`` on it in the background; returns the session name."""
    if gpu is not None:
        check_gpu(gpu)
    exe = list(cli.command)
    cmd = [*exe, "new", "-s", name] + (["--gpu", gpu] if gpu else [])
    try:
        made = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LaunchError(f"`colab new` did not finish in 10 minutes (session {name})") \
            from None
    if made.returncode != 0:
        raise LaunchError(f"`colab new` failed ({made.returncode}): "
                          f"{_last(made.stderr + made.stdout)}")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        subprocess.Popen([sys.executable, "-m", "orchestrator.places.colab_launch",
                          shlex.join(exe), name, str(notebook),
                          f"{exec_timeout(session_hours):.0f}"], stdin=subprocess.DEVNULL,
                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return name


def run_then_stop(command: str, name: str, notebook: str, timeout: str) -> int:
    """Run the notebook on the session (``exec --timeout``: its cells are not cut),
    then release the session whatever happened (``command``: the colab CLI's command
    line, shell-quoted). The launched copy of the notebook and exec's output copy hold
    the Drive sign-in and the project's key: both are deleted once the session ends."""
    import os

    exe = shlex.split(command)
    os.umask(0o077)  # exec writes NOTEBOOK_output.ipynb beside it: it holds the sign-in
    started = time.time()
    try:
        code = subprocess.run([*exe, "exec", "-s", name, "-f", notebook, "--timeout", timeout],
                              stdin=subprocess.DEVNULL).returncode
    finally:
        stopped = subprocess.run([*exe, "stop", "-s", name], stdin=subprocess.DEVNULL).returncode
        copy = Path(notebook)
        for secret in (copy, copy.with_name(copy.stem + "_output.ipynb")):
            secret.unlink(missing_ok=True)
    print(f"colab session {name}: notebook exited {code} after {time.time() - started:.0f} s; "
          f"stop exited {stopped}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(run_then_stop(*sys.argv[1:5]))
