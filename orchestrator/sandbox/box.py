"""The sandbox's state folder and its local Drive server, run detached.

One folder (``--dir``, else $ORCH_SANDBOX_DIR, else ``$XDG_STATE_HOME/orch/sandbox``,
i.e. ``~/.local/state/orch/sandbox``) holds everything the sandbox starts:

- ``server.json``: the running server's URL, pid and the pid's start time (written
  by :meth:`Sandbox.up` once the server answers, removed by :meth:`Sandbox.down`);
  ``server.log``; ``port``: the last port, taken again by the next ``up`` so that
  projects pointed at the sandbox keep working after ``down``/``up``;
- ``secrets.json`` (mode 0600): the stand-in Colab's secrets (``orch sandbox use``
  sets ORCH_HUB_KEY);
- ``sessions/NAME/``: one stand-in Colab session each (:mod:`.colab_cli`): its
  ``session.json``, ADC file, pip target, work folder and executed notebook.

A pid is signalled only while it is the process the sandbox started: its start time
(``/proc/PID/stat``) is recorded beside it and compared first, so a stale file (after
a reboot, or a pid taken by another process) never stops anything else.

The server keeps its files in memory: a stopped sandbox forgets every hub on it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..errors import OrchError, UsageError
from ..logs import get_logger
from ..procgroup import pid_alive, start_ticks

log = get_logger(__name__)
DIR_ENV = "ORCH_SANDBOX_DIR"


class SandboxError(OrchError):
    """The sandbox could not be started, reached or stopped."""


def default_dir() -> Path:
    """$ORCH_SANDBOX_DIR, else ``$XDG_STATE_HOME/orch/sandbox`` (``~/.local/state``)."""
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV]).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "orch" / "sandbox"


@dataclass(frozen=True)
class Server:
    """The sandbox's local Drive server: its root URL and process."""

    url: str
    pid: int
    started_at: float
    pid_start: int | None = None  # the process's start time (its identity with pid)


@dataclass(frozen=True)
class Session:
    """A stand-in Colab session (``session.json``, written by :mod:`.colab_cli`):
    ``pid`` runs its notebook, ``kernel_pid`` is the notebook's kernel."""

    name: str
    gpu: str | None
    state: str  # "new", "running", "stopped"
    created_at: float
    pid: int | None = None
    kernel_pid: int | None = None
    pid_start: int | None = None
    kernel_start: int | None = None

    @property
    def live(self) -> bool:
        return (self.pid is not None and alive(self.pid, self.pid_start)) or \
            (self.kernel_pid is not None and alive(self.kernel_pid, self.kernel_start))


def alive(pid: int, started: int | None = None) -> bool:
    """Whether process ``pid`` exists (a zombie of ours counts as gone) and, given
    ``started`` (:func:`.procgroup.start_ticks` when it was recorded), is still that process.
    Without /proc the start time cannot be compared: then only existence counts."""
    return pid_alive(pid) and (started is None or start_ticks(pid) in (started, None))


def stop_process(pid: int, started: int | None, group: bool = False,
                 wait: float = 10.0) -> None:
    """SIGTERM ``pid`` (its whole process group with ``group``), SIGKILL after ``wait``;
    only while it is the process that started at ``started`` (:func:`alive`)."""
    def send(sig: int) -> None:
        if not alive(pid, started):
            return
        try:
            os.killpg(pid, sig) if group else os.kill(pid, sig)
            return
        except (ProcessLookupError, PermissionError):
            pass
        try:
            os.kill(pid, sig)  # not a group leader after all
        except (ProcessLookupError, PermissionError):
            pass

    send(signal.SIGTERM)
    deadline = time.time() + wait
    while alive(pid, started) and time.time() < deadline:
        time.sleep(0.1)
    send(signal.SIGKILL)


class Sandbox:
    """The sandbox whose state folder is ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.expanduser().resolve()
        self.server_file = self.folder / "server.json"
        self.secrets_file = self.folder / "secrets.json"
        self.sessions_dir = self.folder / "sessions"

    @classmethod
    def at(cls, given: Path | None, create: bool = True) -> Sandbox:
        """The sandbox at ``given`` (else :func:`default_dir`); UsageError when that
        path is a file or cannot be made a folder. Without ``create`` a missing folder
        is not made (a sandbox that never ran there)."""
        folder = given if given is not None else default_dir()
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"sandbox folder {folder}: it is a file, not a folder")
        if not create and not folder.exists():
            return cls(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise UsageError(f"sandbox folder {folder}: cannot create it "
                             f"({exc.strerror or exc})") from None
        if not os.access(folder, os.W_OK):
            raise UsageError(f"sandbox folder {folder}: not writable")
        return cls(folder)

    # ---- the Drive server ----------------------------------------------------------

    def recorded(self) -> Server | None:
        """The server ``server.json`` names while that very process lives (answering
        or not), or None."""
        try:
            doc = json.loads(self.server_file.read_text())
            server = Server(url=doc["url"], pid=int(doc["pid"]),
                            started_at=float(doc["started_at"]),
                            pid_start=doc.get("pid_start"))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return server if alive(server.pid, server.pid_start) else None

    def server(self) -> Server | None:
        """The running server (its recorded process alive and answering), or None."""
        server = self.recorded()
        if server is None:
            return None
        try:
            self.control(server.url, "config", method="GET", timeout=3)
        except SandboxError:
            return None
        return server

    def up(self, port: int = 0, timeout: float = 30.0) -> tuple[Server, bool]:
        """Start the server detached unless it runs; ``(server, started now)``.
        Idempotent: a running server is returned as it is. ``port`` 0 takes the last
        port again when it is free (else any free one)."""
        import fcntl

        with open(self.folder / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            running = self.recorded()
            if running is not None and self.server() is None:
                raise SandboxError(f"the sandbox's Drive server (pid {running.pid}) runs but "
                                   "does not answer: stop it with `orch sandbox down`")
            if running is not None:
                return running, False
            last = self._last_port() if port == 0 else None
            if last is not None:
                try:
                    return self._start(last, timeout), True
                except SandboxError:  # taken by something else since: any free port
                    log.info("port %d is taken; the sandbox takes another", last)
            return self._start(port, timeout), True

    def _last_port(self) -> int | None:
        try:
            return int((self.folder / "port").read_text())
        except (OSError, ValueError):
            return None

    def _start(self, port: int, timeout: float) -> Server:
        """Start the server on ``port`` (0: any free one) and wait for its URL."""
        logfile = self.folder / "server.log"
        with open(logfile, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.sandbox.drive", "--port", str(port),
                 "--user-email", "you@sandbox.invalid"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.folder)
        deadline = time.time() + timeout
        url = ""
        while not url:
            first = logfile.read_text(errors="replace").partition("\n")
            if first[1] and first[0].startswith("http"):
                url = first[0].strip()
            elif proc.poll() is not None or time.time() > deadline:
                if proc.poll() is None:
                    proc.kill()
                tail = logfile.read_text(errors="replace").strip().splitlines()[-1:]
                raise SandboxError("the sandbox's Drive server did not start"
                                   f"{': ' + tail[0] if tail else ''} (log: {logfile})")
            else:
                time.sleep(0.05)
        server = Server(url=url, pid=proc.pid, started_at=time.time(),
                        pid_start=start_ticks(proc.pid))
        write_atomic(self.server_file, json.dumps(server.__dict__, indent=1) + "\n")
        from urllib.parse import urlsplit

        write_atomic(self.folder / "port", str(urlsplit(url).port))
        log.info("sandbox Drive server at %s (pid %d)", url, proc.pid)
        return server

    def down(self) -> tuple[Server | None, list[str]]:
        """Stop the stand-in sessions and the server; what was stopped. Idempotent."""
        stopped = [s.name for s in self.sessions() if s.live]
        for name in stopped:
            self.stop_session(name)
        server = self.recorded()  # stopped even when it no longer answers
        if server is not None:
            stop_process(server.pid, server.pid_start)
        self.server_file.unlink(missing_ok=True)
        return server, stopped

    def control(self, url: str, what: str, body: dict[str, Any] | None = None,
                method: str = "POST", timeout: float = 10.0) -> dict[str, Any]:
        """A call to the server's ``/_fake`` control API (JSON in and out)."""
        import urllib.error
        import urllib.request

        data = json.dumps(body or {}).encode() if method == "POST" else None
        request = urllib.request.Request(url.rstrip("/") + f"/_fake/{what}", data=data,
                                         method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return dict(json.loads(reply.read()))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise SandboxError(f"the sandbox's Drive server at {url} does not answer "
                               f"({exc}); is it up? (`orch sandbox status`)") from None

    def require(self) -> Server:
        """The running server, or SandboxError saying how to start it."""
        server = self.server()
        if server is None:
            raise SandboxError(f"the sandbox is not running (folder {self.folder}): "
                               "start it with `orch sandbox up`")
        return server

    def token(self, ttl: float = 24 * 3600.0) -> str:
        """A fresh access token from the running server, valid ``ttl`` seconds."""
        return str(self.control(self.require().url, "tokens", {"ttl": ttl})["access_token"])

    # ---- the stand-in Colab's secrets ------------------------------------------------

    def secrets(self) -> dict[str, str]:
        try:
            return {str(k): str(v) for k, v in json.loads(self.secrets_file.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def set_secret(self, name: str, value: str) -> None:
        """Set one secret (atomic; the file is mode 0600)."""
        write_atomic(self.secrets_file, json.dumps({**self.secrets(), name: value}, indent=1),
                     mode=0o600)

    # ---- stand-in Colab sessions ---------------------------------------------------

    def session_dir(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise UsageError(f"bad session name {name!r}")
        return self.sessions_dir / name

    def session(self, name: str) -> Session | None:
        try:
            doc = json.loads((self.session_dir(name) / "session.json").read_text())
            return Session(**doc)
        except (OSError, ValueError, TypeError):
            return None

    def save_session(self, session: Session) -> None:
        folder = self.session_dir(session.name)
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "session.json", json.dumps(session.__dict__, indent=1) + "\n")

    def sessions(self) -> list[Session]:
        if not self.sessions_dir.is_dir():
            return []
        found = (self.session(p.name) for p in sorted(self.sessions_dir.iterdir()))
        return [s for s in found if s is not None]

    def stop_session(self, name: str) -> Session | None:
        """Stop a session's kernel (its process group: the worker and its job) and the
        process running its notebook; mark it stopped. Idempotent."""
        import dataclasses

        session = self.session(name)
        if session is None:
            return None
        if session.kernel_pid:
            stop_process(session.kernel_pid, session.kernel_start, group=True)
        if session.pid and session.pid != os.getpid():
            stop_process(session.pid, session.pid_start)
        stopped = dataclasses.replace(session, state="stopped")
        self.save_session(stopped)
        return stopped
