"""The ``sshd`` fixture itself (tests/sshd.py): a real OpenSSH server on 127.0.0.1 that
paramiko logs into with the user key, verifying the host key against known_hosts."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator.procgroup import pid_alive
from tests.conftest import wait_for
from tests.sshd import Sshd

TIMEOUT = 10.0  # seconds, for every connect / banner / auth / channel wait


def connect(server: Sshd, known_hosts: Path | None) -> Any:
    """A paramiko client logged in to ``server``; unknown host keys are rejected."""
    import paramiko

    client = paramiko.SSHClient()
    if known_hosts is not None:
        client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(server.host, port=server.port, username=server.user,
                       key_filename=str(server.user_key), look_for_keys=False,
                       allow_agent=False, timeout=TIMEOUT, banner_timeout=TIMEOUT,
                       auth_timeout=TIMEOUT, channel_timeout=TIMEOUT)
    except BaseException:
        client.close()
        raise
    return client


def known_hosts(server: Sshd, tmp_path: Path) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(server.known_hosts_line + "\n")
    return path


def run(client: Any, command: str) -> tuple[int, str]:
    _, stdout, _ = client.exec_command(command, timeout=TIMEOUT)
    out = stdout.read().decode()
    return stdout.channel.recv_exit_status(), out


def test_runs_a_command_with_the_user_key_and_refuses_an_unknown_host_key(
        sshd: Sshd, tmp_path: Path) -> None:
    import paramiko

    client = connect(sshd, known_hosts(sshd, tmp_path))
    try:
        assert run(client, "echo hi") == (0, "hi\n")
    finally:
        client.close()
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        connect(sshd, None)


def test_sftp_writes_and_reads_a_file(sshd: Sshd, tmp_path: Path) -> None:
    target = tmp_path / "remote" / "data.bin"
    target.parent.mkdir()
    payload = bytes(range(256)) * 100
    client = connect(sshd, known_hosts(sshd, tmp_path))
    try:
        with client.open_sftp() as sftp:
            with sftp.open(str(target), "wb") as f:
                f.write(payload)
            with sftp.open(str(target), "rb") as f:
                assert f.read() == payload
            assert sftp.stat(str(target)).st_size == len(payload)
    finally:
        client.close()
    assert target.read_bytes() == payload


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_stopping_drops_sessions_and_start_serves_the_same_port_again(
        sshd: Sshd, tmp_path: Path, how: str) -> None:
    hosts = known_hosts(sshd, tmp_path)
    port = sshd.port
    client = connect(sshd, hosts)
    try:
        _, stdout, _ = client.exec_command("echo $$; exec sleep 300", timeout=TIMEOUT)
        session_pid = int(stdout.readline())  # a live session's command
        assert pid_alive(session_pid)
        getattr(sshd, how)()
        assert not sshd.alive()
        transport = client.get_transport()
        wait_for(lambda: not transport.is_active(), timeout=TIMEOUT,
                 message="the client to see its connection drop")
    finally:
        client.close()
    assert not pid_alive(session_pid)
    with pytest.raises(OSError):  # paramiko's NoValidConnectionsError is one
        connect(sshd, hosts)
    getattr(sshd, how)()  # idempotent

    sshd.start()
    assert sshd.alive() and sshd.port == port
    client = connect(sshd, hosts)
    try:
        assert run(client, "echo again") == (0, "again\n")
    finally:
        client.close()


def test_fingerprint_is_what_ssh_keygen_prints(sshd: Sshd) -> None:
    out = subprocess.run(["ssh-keygen", "-lf", str(sshd.host_key_pub)], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    assert sshd.fingerprint == out.split()[1]
    assert sshd.fingerprint.startswith("SHA256:") and not sshd.fingerprint.endswith("=")
    assert sshd.known_hosts_line.startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 AAAA")
