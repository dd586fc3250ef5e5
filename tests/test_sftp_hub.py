"""The SFTP hub beyond the hub contract (tests/test_hub_contract.py runs that on SFTP):
its one connection survives sshd going away and coming back, and a host out of reach
is one HubError line, in bounded time, never a paramiko exception.

Against a real OpenSSH server on 127.0.0.1 (the ``sshd`` fixture, tests/sshd.py)."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.errors import HubError, HubNotFound
from orchestrator.hosts import Host
from orchestrator.hubs.sftp import SftpHub
from orchestrator.ssh import HostLink
from tests.conftest import wait_for
from tests.sshd import Sshd, _descendants

pytestmark = pytest.mark.timeout(180)

#: The longest one operation may take to give up on a host that is away.
GIVE_UP = 15.0


def make_link(server: Sshd, tmp_path: Path, port: int | None = None,
              timeout: float = 10.0) -> HostLink:
    """A HostLink to ``server`` (or to ``port`` of 127.0.0.1) signing in with its user
    key, the host key trusted in a known_hosts file of the test."""
    known = tmp_path / "known_hosts"
    known.write_text(server.known_hosts_line + "\n")
    host = Host(name="box", user=server.user, address=server.host,
                port=server.port if port is None else port, key=str(server.user_key),
                python=sys.executable, workdir=str(tmp_path / "host"))
    return HostLink(host, known, timeout=timeout)


@pytest.fixture
def link(sshd: Sshd, tmp_path: Path) -> Iterator[HostLink]:
    """One connection to the test's sshd, closed at teardown."""
    made = make_link(sshd, tmp_path)
    yield made
    made.close()


def sign_ins(server: Sshd) -> int:
    """How many times sshd let the user key in (every run of the server so far)."""
    return server.log().count("Accepted publickey")


@pytest.mark.parametrize("how", ["stop", "kill"])
@pytest.mark.parametrize("first", ["put", "get"])
def test_one_reconnect_after_sshd_restarts(sshd: Sshd, link: HostLink, tmp_path: Path,
                                           how: str, first: str) -> None:
    """sshd stopped (or killed) and started again on the same port between two
    operations: the next put or get works through the same SftpHub, over exactly one
    new connection, and the hub keeps using that connection afterwards."""
    root = tmp_path / "hub"
    hub = SftpHub(link, str(root))
    hub.put_bytes("a/one.bin", b"one")
    assert hub.get_bytes("a/one.bin") == b"one"
    assert sign_ins(sshd) == 1

    getattr(sshd, how)()
    sshd.start()

    if first == "put":
        hub.put_bytes("a/two.bin", b"two")
        assert hub.get_bytes("a/one.bin") == b"one"
    else:
        assert hub.get_bytes("a/one.bin") == b"one"
        hub.put_bytes("a/two.bin", b"two")
    assert hub.list("a") == ["one.bin", "two.bin"]
    hub.put_file("a/three.bin", root / "a" / "two.bin")
    hub.delete("a/one.bin")
    assert hub.exists("a/two.bin") and not hub.exists("a/one.bin")
    assert link.up
    assert sign_ins(sshd) == 2, "not exactly one reconnect:\n" + sshd.log()[-2000:]
    assert sorted(p.name for p in (root / "a").iterdir()) == ["three.bin", "two.bin"]
    assert (root / "a" / "three.bin").read_bytes() == b"two"


def _ops(hub: SftpHub, tmp_path: Path) -> dict[str, Callable[[], object]]:
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    return {
        "put_bytes": lambda: hub.put_bytes("k/new.bin", b"x"),
        "put_file": lambda: hub.put_file("k/file.bin", src),
        "get_bytes": lambda: hub.get_bytes("k/old.bin"),
        "get_file": lambda: hub.get_file("k/old.bin", tmp_path / "dl" / "old.bin"),
        "get_json": lambda: hub.get_json("k/old.bin"),
        "exists": lambda: hub.exists("k/old.bin"),
        "list": lambda: hub.list("k"),
        "delete": lambda: hub.delete("k/old.bin"),
    }


def _raises_hub_error(op: Callable[[], object], name: str) -> HubError:
    """``op``'s HubError (not HubNotFound, not paramiko's), raised within GIVE_UP s."""
    start = time.monotonic()
    try:
        op()
    except HubError as exc:
        elapsed = time.monotonic() - start
        assert elapsed < GIVE_UP, f"{name} took {elapsed:.1f} s to give up"
        assert not isinstance(exc, HubNotFound), f"{name}: {exc!r} says 'missing'"
        return exc
    except Exception as exc:  # noqa: BLE001 - what must not escape the hub
        pytest.fail(f"{name} raised {type(exc).__module__}.{type(exc).__name__}: {exc}")
    pytest.fail(f"{name} did not raise with the host away")


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_sshd_away_is_one_hub_error_in_bounded_time(sshd: Sshd, link: HostLink,
                                                   tmp_path: Path, how: str) -> None:
    """With sshd stopped (or killed), every operation of a hub that was connected
    raises HubError (one line, naming the host) within GIVE_UP s, and nothing of the
    local side changes; once sshd is back, the same hub works again."""
    root = tmp_path / "hub"
    hub = SftpHub(link, str(root))
    hub.put_bytes("k/old.bin", b"old")
    getattr(sshd, how)()

    for name, op in _ops(hub, tmp_path).items():
        exc = _raises_hub_error(op, name)
        assert "\n" not in str(exc) and "box" in str(exc), f"{name}: {exc}"
    assert not link.up
    assert not (tmp_path / "dl").exists(), "get_file left something while the host was away"

    sshd.start()
    assert hub.get_bytes("k/old.bin") == b"old"
    hub.put_bytes("k/new.bin", b"new")
    assert (root / "k" / "new.bin").read_bytes() == b"new"
    assert link.up


def test_nothing_listening_is_one_hub_error_in_bounded_time(sshd: Sshd, tmp_path: Path) -> None:
    """A hub whose host never answered (a port nobody listens on) raises HubError for
    every operation, within GIVE_UP s each."""
    from tests.sshd import free_port

    link = make_link(sshd, tmp_path, port=free_port())
    try:
        hub = SftpHub(link, str(tmp_path / "hub"))
        for name, op in _ops(hub, tmp_path).items():
            exc = _raises_hub_error(op, name)
            assert "cannot reach host box" in str(exc), f"{name}: {exc}"
    finally:
        link.close()


def test_silent_host_is_one_hub_error_in_bounded_time(sshd: Sshd, tmp_path: Path) -> None:
    """A host that accepts the TCP connection but never says a word (no SSH banner):
    the operation gives up with HubError after about the link's timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts; nobody ever reads or writes
        link = make_link(sshd, tmp_path, port=silent.getsockname()[1], timeout=2.0)
        try:
            hub = SftpHub(link, str(tmp_path / "hub"))
            exc = _raises_hub_error(lambda: hub.get_bytes("k/old.bin"), "get_bytes")
            assert "box" in str(exc) and "\n" not in str(exc), exc
        finally:
            link.close()


def test_a_host_that_stops_answering_mid_connection_is_dropped_not_waited_on(
        sshd: Sshd, tmp_path: Path) -> None:
    """The host freezes after the connection is made (its sshd processes stopped): a
    request unanswered for the link's op_timeout drops the link with HubError, instead
    of holding the daemon's tick forever; once it answers again the hub works."""
    import signal

    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line + "\n")
    host = Host(name="frozen", user=sshd.user, address=sshd.host, port=sshd.port,
                key=str(sshd.user_key), python=sys.executable, workdir=str(tmp_path))
    link = HostLink(host, known, timeout=3.0, op_timeout=2.0)
    hub = SftpHub(link, str(tmp_path / "hub"))
    hub.put_bytes("a.txt", b"1")
    frozen = _sshd_tree(sshd)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(HubError):
            hub.get_bytes("a.txt")
        assert time.monotonic() - started < 15
        assert not link.up
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: _works(hub), timeout=30, message="the hub works again")
    link.close()


def _sshd_tree(sshd: Sshd) -> list[int]:
    """The pids of sshd and every process below it (sshd first)."""
    root = int(sshd.pid_file.read_text().strip())
    return [root, *_descendants({root})]


def _works(hub: SftpHub) -> bool:
    try:
        return hub.get_bytes("a.txt") == b"1"
    except HubError:
        return False
