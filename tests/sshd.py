"""A real OpenSSH server on 127.0.0.1 for the tests: its own host key, user key, config
and free port, all in one folder; nothing of the system's ssh set-up is read or changed
(except that, as root, sshd's privilege-separation folder ``/run/sshd`` is created).

Contract of :class:`Sshd`:

* ``Sshd(folder)`` makes ``folder``, generates an ed25519 host key and an ed25519 user key
  (no passphrase) with ``ssh-keygen``, writes ``sshd_config`` and ``authorized_keys`` and
  starts ``/usr/sbin/sshd -D -e`` on a free port of 127.0.0.1; it returns once the port
  answers with an SSH banner (or raises: ``AssertionError`` after the timeout,
  ``RuntimeError`` with the log's tail when sshd exited).
* Logging in works only as the current user (:attr:`Sshd.user`, root in CI), only with
  :attr:`Sshd.user_key`; passwords and keyboard-interactive are off. SFTP is served by
  sshd itself (``internal-sftp``).
* :meth:`Sshd.stop` ends the server *and every process still descended from it*: the
  per-connection sshd processes (so connected clients see the connection drop) and the
  commands their sessions run. A process that detached (re-parented away from sshd, e.g.
  ``setsid nohup … &``) keeps running, as on a real host whose sshd went down.
  :meth:`Sshd.kill` does the same with SIGKILL only (a crash). Both are idempotent.
* :meth:`Sshd.start` starts it again on the *same* port with the same keys.
* The log (all runs, appended) is :attr:`Sshd.log_path`; :meth:`Sshd.log` reads it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

from orchestrator.procgroup import pid_alive
from tests.conftest import process_table, wait_for

SSHD = Path("/usr/sbin/sshd")  # sshd re-executes itself: it must be started by absolute path
HOST = "127.0.0.1"
PRIVSEP_DIR = Path("/run/sshd")  # compiled into Debian's sshd; needed when run as root


def ssh_available() -> bool:
    """Whether the OpenSSH server (``/usr/sbin/sshd``) and ``ssh-keygen`` are installed."""
    return os.access(SSHD, os.X_OK) and shutil.which("ssh-keygen") is not None


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` different TCP ports of 127.0.0.1 that nothing listens on right now (all
    held at once while chosen: two single picks may draw the same port)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                 for _ in range(n)]
        for s in socks:
            s.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in socks]


def fingerprint_of(public_key: Path) -> str:
    """The SHA256 fingerprint of an OpenSSH ``.pub`` file, as ``ssh-keygen -l`` prints it
    (``SHA256:`` + unpadded base64 of the key blob's SHA-256)."""
    blob = base64.b64decode(public_key.read_text().split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                    "-f", str(path)], check=True, capture_output=True, timeout=30)


def _descendants(roots: set[int]) -> set[int]:
    """Every live process below ``roots`` (not the roots themselves)."""
    parents = {pid: int(fields[1]) for pid, fields in process_table().items()}
    found: set[int] = set()
    frontier = set(roots)
    while frontier:  # bounded: each pid joins ``found`` at most once
        frontier = {pid for pid, ppid in parents.items()
                    if ppid in frontier and pid not in found and pid not in roots}
        found |= frontier
    return found


def _signal(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class Sshd:
    """One sshd on 127.0.0.1 serving the current user (see the module's docstring).

    Its attributes are set once (assigning one again raises ``AttributeError``)."""

    host: str
    port: int
    user: str
    folder: Path
    host_key: Path
    host_key_pub: Path
    user_key: Path
    user_key_pub: Path
    authorized_keys: Path
    config: Path
    pid_file: Path
    log_path: Path
    fingerprint: str
    known_hosts_line: str

    def __init__(self, folder: Path, *, port: int | None = None, start: bool = True,
                 timeout: float = 15.0) -> None:
        """Generate keys and config in ``folder`` and (unless ``start`` is false) start
        sshd on ``port`` (default: a free one), waiting at most ``timeout`` seconds."""
        self._proc: subprocess.Popen[bytes] | None = None
        folder = folder.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.host = HOST
        self.port = port if port is not None else free_port()
        # the account sshd authenticates: the effective user (a non-root sshd can log in
        # only as itself), not $USER
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.host_key = folder / "ssh_host_ed25519_key"
        self.host_key_pub = folder / "ssh_host_ed25519_key.pub"
        self.user_key = folder / "id_ed25519"
        self.user_key_pub = folder / "id_ed25519.pub"
        self.authorized_keys = folder / "authorized_keys"
        self.config = folder / "sshd_config"
        self.pid_file = folder / "sshd.pid"
        self.log_path = folder / "sshd.log"
        _keygen(self.host_key, "orch-test-host")
        _keygen(self.user_key, f"orch-test-{self.user}")
        self.authorized_keys.write_text(self.user_key_pub.read_text())
        self.authorized_keys.chmod(0o600)
        self.config.write_text(self._config_text())
        self.fingerprint = fingerprint_of(self.host_key_pub)
        key_type, key_b64 = self.host_key_pub.read_text().split()[:2]
        self.known_hosts_line = f"[{self.host}]:{self.port} {key_type} {key_b64}"
        self._frozen = True
        if start:
            self.start(timeout=timeout)

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and getattr(self, "_frozen", False):
            raise AttributeError(f"Sshd.{name} is read-only")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        state = "running" if self.alive() else "stopped"
        return f"<Sshd {self.user}@{self.host}:{self.port} {state} in {self.folder}>"

    def _config_text(self) -> str:
        return "\n".join([
            f"Port {self.port}",
            f"ListenAddress {HOST}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pid_file}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"AllowUsers {self.user}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "X11Forwarding no",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
            "",
        ])

    # ---- running it --------------------------------------------------------------------

    def alive(self) -> bool:
        """Whether the server process is running (it may not be listening yet)."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        """Start sshd (same port, same keys) unless it runs; return once the port answers
        with an SSH banner. Raises ``RuntimeError`` (with the log's tail) if sshd exits,
        ``AssertionError`` if it does not answer within ``timeout`` seconds."""
        if self.alive():
            return
        if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.config)], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(self._answers, timeout=timeout, interval=0.05,
                     message=f"sshd to answer on {self.host}:{self.port}")
        except BaseException:
            self.kill()
            raise

    def _answers(self) -> bool:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            code = None if proc is None else proc.returncode
            raise RuntimeError(f"sshd exited ({code}):\n{self.log()[-2000:]}")
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as s:
                return s.recv(256).startswith(b"SSH-")
        except OSError:
            return False

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the server, SIGKILL its sessions and every process still below it; after
        ``timeout`` seconds SIGKILL whatever is left. Returns once all are gone."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the server and every process still below it, as in a crash."""
        self._end(signal.SIGKILL, 5.0)

    def _end(self, sig: int, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _signal({proc.pid}, signal.SIGSTOP)  # no new connection while its sessions are found
        family = self._freeze(proc.pid)
        try:
            os.killpg(proc.pid, sig)  # sshd leads its own group (start_new_session)
        except ProcessLookupError:
            pass
        _signal(family, signal.SIGKILL)  # sessions drop, as when the host goes away
        _signal(family | {proc.pid}, signal.SIGCONT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=timeout)
        wait_for(lambda: not any(pid_alive(pid) for pid in family), timeout=timeout,
                 interval=0.02, message="sshd's sessions to end")

    @staticmethod
    def _freeze(pid: int) -> set[int]:
        """SIGSTOP every process below ``pid`` (so none forks while they are being ended)
        and return them; a few passes catch children forked during the scan."""
        family: set[int] = set()
        for _ in range(10):
            new = _descendants({pid} | family) - family
            if not new:
                break
            _signal(new, signal.SIGSTOP)
            family |= new
        return family

    def log(self) -> str:
        """The server's log so far (every run)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Sshd:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

