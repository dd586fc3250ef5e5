"""One SSH connection to a host (fabric, over paramiko), shared by the host's SFTP
hub and its place.

The host's key must be known: in ``~/.ssh/known_hosts`` or the project's
``.orch/known_hosts``. An unknown key is refused with its fingerprint and the
command that accepts it; a changed key is refused as a possible attack. Nothing is
ever added on its own. Sign-in is by key (the host's ``--key``, else the SSH agent
and ``~/.ssh``); no password is asked for or stored.

:class:`HostLink` opens on first use and, after a drop, reopens on the next call:
:meth:`HostLink.call` retries once on a fresh connection. Thread-safe (one lock).
fabric and paramiko are imported only here, when a connection is made.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import OrchError
from .hosts import Host
from .logs import get_logger

if TYPE_CHECKING:
    import paramiko
    from fabric import Connection

log = get_logger(__name__)
logging.getLogger("paramiko").setLevel(logging.WARNING)  # not a line per sign-in
T = TypeVar("T")
TIMEOUT = 10.0  # seconds to connect, read the banner, sign in
KEEPALIVE = 15  # seconds between keepalives on an idle connection
OP_TIMEOUT = 60.0  # seconds one SFTP request may go unanswered before the link is dropped


class HostError(OrchError):
    """A host could not be reached, refused us, or cannot run workers. One line."""


class UnknownHostKey(HostError):
    """The host's key is in no known_hosts file."""


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:…`` fingerprint of a host key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _unknown(host: Host, key: paramiko.PKey) -> UnknownHostKey:
    fp = fingerprint(key)
    return UnknownHostKey(
        f"the key of host {host.name} ({host.known_hosts_name}) is not known: "
        f"{key.get_name()} {fp}; if that is its key (compare with `ssh-keygen -lf` of its "
        f"host key), accept it with: orch hosts trust {host.name} --fingerprint {fp}")


def need_fabric() -> None:
    """UsageError, in one line, when the `ssh` extra is not installed."""
    try:
        import fabric  # noqa: F401
        import paramiko  # noqa: F401
    except ImportError:
        from .errors import UsageError

        raise UsageError("SSH hosts need fabric: pip install 'orch[ssh]'") from None


def fetch_host_key(host: Host, timeout: float = TIMEOUT) -> paramiko.PKey:
    """The key the host presents (no sign-in): for `orch hosts trust`."""
    need_fabric()
    import paramiko

    try:
        sock = socket.create_connection((host.address, host.port), timeout=timeout)
    except OSError as exc:
        raise HostError(f"cannot reach host {host.name} at {host.destination}: "
                        f"{exc.strerror or exc}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise HostError(f"host {host.name} at {host.destination} does not speak SSH: "
                        f"{exc}") from None
    finally:
        transport.close()


class HostLink:
    """The connection to one host, opened on first use."""

    def __init__(self, host: Host, known_hosts: Path, timeout: float = TIMEOUT,
                 op_timeout: float = OP_TIMEOUT) -> None:
        self.host = host
        self.known_hosts = known_hosts
        self.timeout = timeout
        self.op_timeout = op_timeout
        self._lock = threading.RLock()
        self._conn: Connection | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self.down_since: float | None = None  # when the last call failed to connect

    # ---- connecting ---------------------------------------------------------------

    def connect(self) -> Connection:
        """The open connection (opened now if needed); HostError in one line."""
        with self._lock:
            if self._conn is not None and self._active():
                return self._conn
            self.close()
            self._conn = self._open()
            self.down_since = None
            return self._conn

    def _active(self) -> bool:
        transport = self._conn.client.get_transport() if self._conn else None
        return bool(transport and transport.is_active())

    def _open(self) -> Connection:
        need_fabric()
        import paramiko
        from fabric import Config, Connection

        host = self.host
        key = str(Path(host.key).expanduser()) if host.key else None
        if key and not Path(key).is_file():
            raise HostError(f"host {host.name}: no key file {key}")
        conn = Connection(
            host.address, user=host.user, port=host.port, connect_timeout=self.timeout,
            config=Config(overrides={"load_ssh_configs": False}),
            # the agent stays on: a key with a passphrase is used through it
            connect_kwargs={"key_filename": key, "look_for_keys": key is None,
                            "allow_agent": True, "banner_timeout": self.timeout,
                            "auth_timeout": self.timeout, "password": None},
        )
        client = conn.client
        client.set_missing_host_key_policy(_Refuse(host))  # fabric would add any key
        try:
            client.load_system_host_keys()
        except (OSError, paramiko.SSHException):
            pass
        if self.known_hosts.is_file():
            client.load_host_keys(str(self.known_hosts))
        try:
            conn.open()
            transport = client.get_transport()
            if transport is not None:  # a host that vanishes is noticed, not waited on
                transport.set_keepalive(KEEPALIVE)
        except BaseException as exc:  # noqa: BLE001 - closed, then said in one line
            conn.close()  # a failed sign-in leaves no thread or socket behind
            raise self._refusal(exc, key) from None
        log.info("connected to host %s (%s)", host.name, host.destination)
        return conn

    def _refusal(self, exc: BaseException, key: str | None) -> BaseException:
        """The one-line HostError for why connecting failed (others pass through)."""
        import paramiko

        host = self.host
        if isinstance(exc, HostError | KeyboardInterrupt | SystemExit):
            return exc
        if isinstance(exc, paramiko.PasswordRequiredException):
            return HostError(f"host {host.name}: the key {key} has a passphrase: load it "
                             f"into your SSH agent (ssh-add {key})")
        if isinstance(exc, paramiko.BadHostKeyException):
            return HostError(
                f"the key of host {host.name} ({host.known_hosts_name}) has CHANGED (now "
                f"{fingerprint(exc.key)}): this may be an attack; if the host was "
                "reinstalled, remove its old line from known_hosts and trust the new key")
        if isinstance(exc, paramiko.AuthenticationException):
            how = f"the key {key}" if key else "your SSH agent and ~/.ssh keys"
            return HostError(f"host {host.name} ({host.destination}) refused to sign in "
                             f"{host.user} with {how}")
        if isinstance(exc, TimeoutError):
            return HostError(f"cannot reach host {host.name} at {host.destination}: timed out")
        text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return HostError(f"cannot reach host {host.name} at {host.destination}: {text}")

    def close(self) -> None:
        """Close the connection (the next call opens a new one). Idempotent."""
        with self._lock:
            for thing in (self._sftp, self._conn):
                try:
                    if thing is not None:
                        thing.close()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    pass
            self._sftp = None
            self._conn = None

    @property
    def up(self) -> bool:
        return self.down_since is None

    # ---- using it -----------------------------------------------------------------

    def call(self, what: str, fn: Callable[[paramiko.SFTPClient], T]) -> T:
        """``fn`` with the SFTP client. A dropped connection (or SFTP channel) is
        reopened and ``fn`` tried once more; a request unanswered for OP_TIMEOUT drops
        the link (``op_timeout``). File errors (missing, refused) pass through as OSError. HostError
        when the host cannot be reached."""
        with self._lock:
            for tries in (1, 2):
                try:
                    if self._sftp is None or not self._usable():
                        self._close_sftp()
                        self._sftp = self.connect().sftp()
                        self._sftp.get_channel().settimeout(self.op_timeout)
                    return fn(self._sftp)
                except HostError:
                    self._mark_down()
                    raise
                except Exception as exc:
                    hung = isinstance(exc, TimeoutError)
                    if self._usable() and not hung:
                        raise  # a file error (missing, refused), not the connection's
                    error: BaseException = exc
                log.info("connection to host %s dropped during %s (%s)%s", self.host.name,
                         what, error, "; reconnecting" if tries == 1 and not hung else "")
                self.close()
                if hung:
                    break
            self._mark_down()
            raise HostError(f"lost the connection to host {self.host.name} during {what}: "
                            f"{error or type(error).__name__}")

    def _usable(self) -> bool:
        channel = self._sftp.get_channel() if self._sftp is not None else None
        return self._active() and channel is not None and not channel.closed

    def _close_sftp(self) -> None:
        try:
            if self._sftp is not None:
                self._sftp.close()
        except Exception:  # noqa: BLE001 - closing a broken channel
            pass
        self._sftp = None

    def _mark_down(self) -> None:
        if self.down_since is None:
            self.down_since = time.time()

    def abort(self) -> None:
        """From another thread: close the transport under a call that hangs (takes
        no lock; the call fails and its thread goes on)."""
        conn = self._conn
        transport = conn.client.get_transport() if conn is not None else None
        if transport is not None:
            transport.close()

    def run(self, command: str, timeout: float = 60.0, retry: bool = True
            ) -> tuple[int, str, str]:
        """Run a shell command on the host: (exit code, stdout, stderr). No stdin.
        ``retry``: run it again on a fresh connection after a drop (only for commands
        that may run twice)."""
        from invoke.exceptions import CommandTimedOut

        with self._lock:
            for tries in (1, 2):
                conn = self._connect_or_down()
                try:
                    result = conn.run(command, hide=True, warn=True, timeout=timeout,
                                      in_stream=False)
                    return int(result.exited), str(result.stdout), str(result.stderr)
                except CommandTimedOut:
                    raise HostError(f"host {self.host.name}: a command ran over {timeout:.0f} "
                                    "s") from None
                except Exception as exc:  # noqa: BLE001 - a dropped connection
                    if tries == 2 or not retry or self._active():
                        self.close()
                        raise HostError(f"host {self.host.name}: cannot run a command: "
                                        f"{exc or type(exc).__name__}") from None
                    self.close()
            raise AssertionError("unreachable")

    def _connect_or_down(self) -> Connection:
        try:
            return self.connect()
        except HostError:
            self._mark_down()
            raise


class _Refuse:
    """paramiko's missing-host-key policy: refuse, naming the key's fingerprint."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def missing_host_key(self, client: Any, hostname: str, key: paramiko.PKey) -> None:
        raise _unknown(self.host, key)
