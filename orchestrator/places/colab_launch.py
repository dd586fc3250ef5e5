"""Starting a Colab runtime without the browser, through Google's `colab` CLI
(``pip install google-colab-cli``), when it is installed and signed in.

``launch()`` provisions a session (``colab new -s NAME [--gpu T4]``) and hands the
notebook to a detached helper (``python -m orchestrator.places.colab_launch``) that runs it
(``colab exec -s NAME -f NOTEBOOK``: the worker runs until idle) and then releases the
session (``colab stop -s NAME``), so an idle runtime does not hold a GPU.

The command is the ``colab_cli`` setting (default ``colab``): a name on PATH, a path,
or a command line (``orch sandbox use`` points it at orch's stand-in, which runs the
notebook on a local kernel; :mod:`orchestrator.sandbox.colab_cli`).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..errors import LaunchError, NotConfiguredError

CLI = "colab"
GPUS = ("T4", "L4", "A100", "H100")


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


def launch(notebook: Path, name: str, gpu: str | None, log: Path, cli: str = CLI) -> str:
    """Provision a Colab session with the colab CLI ``cli`` and run ``notebook`` on it
    in the background; returns the session name."""
    exe = available(cli)
    if exe is None:
        raise NotConfiguredError(
            f"the colab command-line tool ({cli!r}, the colab_cli setting) is not installed "
            "(pip install google-colab-cli); open the notebook link instead")
    if gpu is not None:
        check_gpu(gpu)
    cmd = [*exe, "new", "-s", name] + (["--gpu", gpu] if gpu else [])
    made = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if made.returncode != 0:
        reason = (made.stderr or made.stdout).strip().splitlines()[-1:] or ["no reason given"]
        raise LaunchError(f"`colab new` failed ({made.returncode}): {reason[0]} "
                          "(is the colab CLI signed in?)")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        subprocess.Popen([sys.executable, "-m", "orchestrator.places.colab_launch",
                          shlex.join(exe), name, str(notebook)], stdin=subprocess.DEVNULL,
                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return name


def run_then_stop(command: str, name: str, notebook: str) -> int:
    """Run the notebook on the session, then release the session whatever happened
    (``command``: the colab CLI's command line, shell-quoted)."""
    exe = shlex.split(command)
    started = time.time()
    try:
        code = subprocess.run([*exe, "exec", "-s", name, "-f", notebook]).returncode
    finally:
        stopped = subprocess.run([*exe, "stop", "-s", name]).returncode
    print(f"colab session {name}: notebook exited {code} after {time.time() - started:.0f} s; "
          f"stop exited {stopped}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(run_then_stop(*sys.argv[1:4]))
