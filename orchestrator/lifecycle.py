"""The daemon's process lifecycle, as the CLI sees it: is it running, start it,
stop it. Kept apart from daemon.py so `orch submit` can check on the daemon
without importing the scheduler.

One daemon per project: it holds an exclusive ``flock`` on ``.orch/daemon.lock``
for its whole life and writes its pid to ``.orch/daemon.pid`` (atomically, via
:mod:`orchestrator.atomic`). The lock, not the pid file, is the truth: a daemon killed
with ``kill -9`` releases the lock with its last breath. Once its first tick has read
every hub's heartbeats it writes its pid to ``.orch/daemon.ready`` too: until then the
store's worker table may not know workers that are alive (:func:`wait_first_scan`).
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import time
from pathlib import Path

from .config import Project
from .errors import DaemonError


def lock_path(project: Project) -> Path:
    return project.state_dir / "daemon.lock"


def pid_path(project: Project) -> Path:
    return project.state_dir / "daemon.pid"


def ready_path(project: Project) -> Path:
    return project.state_dir / "daemon.ready"


def mark_ready(project: Project) -> None:
    """The daemon: its first tick is done (the store knows the hubs' live workers)."""
    from .atomic import write_atomic

    write_atomic(ready_path(project), str(os.getpid()))


def wait_first_scan(project: Project, started: int | None = None,
                    timeout: float = 20.0) -> bool:
    """Wait (at most ``timeout`` s) until the running daemon's first tick is done (or
    that of ``started``, the pid of a daemon the caller has just started, which may not
    hold the lock yet); whether it is. True at once when the daemon is up already, or
    when none runs (nothing more comes by waiting)."""
    deadline = time.monotonic() + timeout
    while True:
        pid = running_pid(project)
        if pid is None and (started is None or not _alive(started)):
            return True
        if pid is not None and pid > 0 and _ready_pid(project) == pid:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _ready_pid(project: Project) -> int | None:
    try:
        return int(ready_path(project).read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a child of ours that exited is reaped)."""
    from .procgroup import pid_alive

    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:  # not our child
        return pid_alive(pid)


def running_pid(project: Project) -> int | None:
    """The daemon's pid if one holds the lock, else None."""
    try:
        fd = os.open(lock_path(project), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return int(pid_path(project).read_text().strip())
        except (OSError, ValueError):
            return -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def poke(project: Project) -> bool:
    """Wake a running daemon now (SIGUSR1), so a new intent (submit, cancel, retry)
    is acted on without waiting for its next tick. True if one was poked."""
    pid = running_pid(project)
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, signal.SIGUSR1)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def ensure_running(project: Project) -> int | None:
    """Start the daemon, or wake the one running. Returns the pid of a new daemon."""
    if poke(project):
        return None
    return start_background(project)


def start_background(project: Project) -> int | None:
    """Start the daemon unless running. Returns the new process's pid, or None if
    one was already running. Cheap: no waiting for it to come up."""
    if running_pid(project) is not None:
        return None
    import subprocess

    project.logs_dir.mkdir(parents=True, exist_ok=True)
    with open(project.logs_dir / "daemon.log", "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.daemon", "--project", str(project.root)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=project.root,
        )
    return proc.pid


def stop(project: Project, timeout: float = 15.0) -> int | None:
    """SIGTERM the daemon and wait until it has released its lock."""
    pid = running_pid(project)
    if pid is None:
        return None
    if pid <= 0:
        raise DaemonError("the daemon holds its lock but its pid file is unreadable")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_pid(project) is None:
            return pid
        time.sleep(0.05)
    raise DaemonError(f"daemon (pid {pid}) did not stop within {timeout:.0f} s")
