"""Signing in to Drive with pydrive2's flows against the local Drive server's OAuth
endpoint, and using the saved credentials (refresh included) with the real client."""

from __future__ import annotations

import json
import socket
import stat
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import UsageError
from orchestrator.hubs.drive.auth import code_from, load_credentials, sign_in

from .conftest import drive_hub, drive_project, run_orch, wait_for


def client_secrets(fake: Any, path: Path) -> Path:
    path.write_text(json.dumps({"installed": {
        "client_id": "orch-test.apps.googleusercontent.com", "client_secret": "s3cret",
        "auth_uri": fake.url + "auth", "token_uri": fake.token_uri,
        "redirect_uris": ["http://localhost"]}}))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_browser_sign_in_gives_private_refreshable_credentials(drive: Any,
                                                               tmp_path: Path) -> None:
    saved = tmp_path / ".orch" / "drive-credentials.json"
    port = free_port()
    result: dict[str, Any] = {}

    def run() -> None:
        result["creds"] = sign_in(client_secrets(drive, tmp_path / "cs.json"), saved,
                                  ports=(port,), launch_browser=False)

    flow = threading.Thread(target=run)
    flow.start()

    def browser_redirect() -> bool:  # what Google's consent page does at the end
        try:
            urllib.request.urlopen(f"http://localhost:{port}/?code=consent-code", timeout=5)
        except OSError:
            return False
        return True

    wait_for(browser_redirect, timeout=30, message="local redirect server")
    flow.join(30)
    assert result["creds"].refresh_token
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    creds = load_credentials(saved)
    assert creds.refresh_token == result["creds"].refresh_token
    from orchestrator.hubs.drive import DriveHub

    hub = DriveHub(f"auth/{tmp_path.name}", credentials=creds, api_url=drive.url, backoff=0.01)
    hub.put_bytes("k", b"v")
    drive.expire_tokens()  # the access token dies; the refresh token gets a new one
    assert drive_hub(f"auth/{tmp_path.name}").get_bytes("k") == b"v"
    hub.put_bytes("k2", b"after refresh")
    assert hub.get_bytes("k2") == b"after refresh"
    assert drive.stats["requests"].get("POST /token", 0) >= 1


def test_no_browser_sign_in_and_status_through_the_cli(drive: Any, project_dir: Path) -> None:
    client_secrets(drive, project_dir / "client_secrets.json")
    env = {"ORCH_DRIVE_ROOT_URL": drive.url}
    proc = run_orch(project_dir, "auth", "--no-browser", env=env,
                    input_text="http://localhost:8080/?code=pasted-code&scope=drive\n")
    assert proc.returncode == 0, proc.stderr
    assert "accounts" not in proc.stderr
    assert "signed in as tester@example.com (user, scope https://www.googleapis.com/auth/drive)" \
        in proc.stdout
    assert drive.url + "auth" in proc.stdout  # the address to open was shown
    saved = project_dir / ".orch" / "drive-credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    status = run_orch(project_dir, "auth", "status", env=env, check=True).stdout
    assert "tester@example.com" in status and "auth/drive" in status
    # the credentials never reach a job snapshot
    (project_dir / "train.py").write_text("print(1)\n")
    from orchestrator.snapshot import plan

    names = [n for n, _ in plan(project_dir).files]
    assert "train.py" in names and not any("credentials" in n for n in names)


def test_service_account_key_is_accepted(drive: Any, project_dir: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps({
        "type": "service_account", "project_id": "p", "private_key_id": "k1",
        "private_key": pem, "client_email": "orch-bot@p.iam.gserviceaccount.com",
        "client_id": "123", "token_uri": drive.token_uri}))
    env = {"ORCH_DRIVE_ROOT_URL": drive.url}
    proc = run_orch(project_dir, "auth", "--service-account", str(key_file), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "orch-bot@p.iam.gserviceaccount.com (service account" in proc.stdout
    saved = project_dir / ".orch" / "drive-credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600


@pytest.mark.parametrize("answer, code, message", [
    ("http://localhost:8080/?state=abc\n", 2, "no authorization code"),
    ("http://localhost:8080/?error=access_denied\n", 1, "refused the sign-in"),
])
def test_bad_answers_give_one_clear_line(drive: Any, project_dir: Path, answer: str, code: int,
                                         message: str) -> None:
    client_secrets(drive, project_dir / "client_secrets.json")
    proc = run_orch(project_dir, "auth", "--no-browser", env={"ORCH_DRIVE_ROOT_URL": drive.url},
                    input_text=answer)
    assert proc.returncode == code
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (project_dir / ".orch" / "drive-credentials.json").exists()


def test_missing_client_file_and_signed_out_status(project_dir: Path) -> None:
    proc = run_orch(project_dir, "auth", "--no-browser", input_text="x\n")
    assert proc.returncode == 2 and "no OAuth client file" in proc.stderr
    status = run_orch(project_dir, "auth", "status")
    assert status.returncode == 1 and "run `orch auth`" in status.stderr
    assert "Traceback" not in status.stderr


def test_code_from_pasted_addresses() -> None:
    assert code_from("http://localhost:8080/?state=x&code=4%2F0Ab&scope=s") == "4/0Ab"
    assert code_from("  4/0Ab-bare-code ") == "4/0Ab-bare-code"
    with pytest.raises(UsageError):
        code_from("https://example.com/nothing-here")


# ---- sign-in that lasts ------------------------------------------------------------


def cli_sign_in(drive: Any, project_dir: Path) -> dict[str, str]:
    """`orch auth --no-browser` through the CLI; the env for later calls."""
    client_secrets(drive, project_dir / "client_secrets.json")
    env = {"ORCH_DRIVE_ROOT_URL": drive.url}
    run_orch(project_dir, "auth", "--no-browser", env=env, check=True,
             input_text="http://localhost:8080/?code=pasted-code\n")
    return env


def test_auth_status_says_when_a_testing_app_sign_in_lapses(drive: Any,
                                                             project_dir: Path) -> None:
    before = time.time()
    env = cli_sign_in(drive, project_dir)
    record = project_dir / ".orch" / "drive-credentials.signin.json"
    at = json.loads(record.read_text())["signed_in_at"]
    assert before <= at <= time.time()
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    lapse = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at + 7 * 86400))
    status = run_orch(project_dir, "auth", "status", env=env, check=True).stdout
    assert (f"if your OAuth app is in Testing status, this sign-in lapses on {lapse} "
            "(7 days); publish it to keep it") in status
    # eight days later (the record says so): lapsed, and what to do
    record.write_text(json.dumps({"signed_in_at": at - 8 * 86400}))
    status = run_orch(project_dir, "auth", "status", env=env, check=True).stdout
    old = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at - 86400))
    assert f"this sign-in lapsed on {old} (7 days): publish the app, then run `orch auth` " \
        "again" in status
    record.unlink()  # signed in by an older orch
    status = run_orch(project_dir, "auth", "status", env=env, check=True).stdout
    assert "when orch signed in is not recorded" in status


def test_revoked_grant_gives_one_line_then_orch_auth_mends_it(drive: Any,
                                                              project_dir: Path) -> None:
    env = cli_sign_in(drive, project_dir)
    saved = project_dir / ".orch" / "drive-credentials.json"
    refresh = json.loads(saved.read_text())["refresh_token"]
    # revoke the grant through the server's control API (as the user would at
    # myaccount.google.com, or Google after 7 days of Testing status)
    request = urllib.request.Request(drive.url + "_fake/tokens/revoke", method="POST",
                                     data=json.dumps({"refresh_token": refresh}).encode())
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert json.load(answer) == {"revoked": 1}
    (project_dir / "orch.toml").write_text('hub = "drive:orch-hub/revoked"\n')
    for command in (("auth", "status"), ("colab",)):
        proc = run_orch(project_dir, *command, env=env)
        assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
        assert proc.stderr.strip().splitlines() == [
            "orch: error: the Drive sign-in has expired or was revoked (Google answered "
            "invalid_grant): run `orch auth` again"], command
    # signing in again gives a new grant: back to work
    cli_sign_in(drive, project_dir)
    assert "tester@example.com" in run_orch(project_dir, "auth", "status", env=env,
                                            check=True).stdout


def test_daemon_logs_one_line_for_a_revoked_grant(drive: Any, project_dir: Path) -> None:
    from oauth2client.file import Storage

    project = drive_project(project_dir, drive)
    refresh = "1//fake-revoked-" + project_dir.parent.name  # this test's own grant
    Storage(str(project.credentials)).put(drive.credentials(refresh_token=refresh))
    daemon_log = project_dir / ".orch" / "logs" / "daemon.log"
    try:
        project.orch("daemon", "start", check=True)
        wait_for(lambda: daemon_log.is_file() and "daemon up" in daemon_log.read_text(),
                 timeout=30, message="the daemon up")
        drive.revoke_tokens(refresh)
        drive.expire_tokens()  # the daemon must refresh, and is refused
        wait_for(lambda: "run `orch auth` again" in daemon_log.read_text(), timeout=60,
                 message="the daemon saying to sign in again")
        refused = drive.requests("POST", "/token")
        wait_for(lambda: drive.requests("POST", "/token") >= refused + 10, timeout=60,
                 message="ten more refused refreshes")  # the daemon tries on, says it once
        text = daemon_log.read_text()
        assert "Traceback" not in text
        told = [ln for ln in text.splitlines() if "invalid_grant" in ln]
        assert len(told) == 1, told
        assert told[0].endswith("cannot read the workers of hub remote: the Drive sign-in "
                                "has expired or was revoked (Google answered invalid_grant): "
                                "run `orch auth` again (listing workers)")
        # `orch auth` again writes a new grant: the running daemon takes it up
        Storage(str(project.credentials)).put(drive.credentials(refresh_token=refresh + "-2"))
        wait_for(lambda: "the workers of hub remote are readable again" in
                 daemon_log.read_text(), timeout=60, message="the daemon using the new grant")
    finally:
        project.close()


def test_a_drive_workers_log_has_no_client_warning_flood(drive: Any, project_dir: Path,
                                                         tmp_path: Path) -> None:
    """Every upload used to log googleapiclient's "takes at most 2 positional
    arguments" warning; the worker also installs a job's --pip wheel (Colab's path)."""
    from .test_packages import SCRIPT, build_wheel

    project = drive_project(project_dir, drive)
    build_wheel(project_dir / "wheels")
    (project_dir / "use.py").write_text(SCRIPT)
    try:
        worker = project.worker("quiet-1", heartbeat=1.0, poll=0.3, idle_timeout=120)
        job = project.orch("submit", "--on", "remote", "--wait", "--pip",
                           "wheels/orchtiny-0.1-py3-none-any.whl", "use.py",
                           env={"PIP_NO_INDEX": "1"}, check=True).stdout.split()[0]
        assert "orchtiny says orchtiny 0.1" in project.orch("logs", job, check=True).stdout
        project.stop_worker(worker)
        text = (project_dir.parent / "quiet-1.log").read_text()
        assert "sealed" in text  # the log is the worker's, and it uploaded files
        noise = [ln for ln in text.splitlines()
                 if "positional argument" in ln or "file_cache" in ln]
        assert noise == []
    finally:
        project.close()


def test_drive_file_scope_setting_is_asked_for_and_explained(drive: Any,
                                                             project_dir: Path) -> None:
    (project_dir / "orch.toml").write_text('drive_scope = "drive.file"\n')
    client_secrets(drive, project_dir / "client_secrets.json")
    env = {"ORCH_DRIVE_ROOT_URL": drive.url}
    proc = run_orch(project_dir, "auth", "--no-browser", env=env,
                    input_text="http://localhost:8080/?code=c\n")
    assert proc.returncode == 0, proc.stderr
    assert "scope=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fdrive.file" in proc.stdout
    assert "(user, scope https://www.googleapis.com/auth/drive.file)" in proc.stdout
    assert "Colab notebooks sign in as another client and will not see the hub" in proc.stderr
    (project_dir / "orch.toml").write_text('drive_scope = "everything"\n')
    bad = run_orch(project_dir, "auth", "--no-browser", env=env, input_text="x\n")
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("orch: error: setting drive_scope: bad value 'everything' "
                                  "(expected drive or drive.file)")


def test_local_drive_server_ends_grants_as_google_does() -> None:
    from orchestrator.sandbox.drive.auth import OAuthError, TokenStore

    tokens = TokenStore("me@example.com")
    first = tokens.grant({"grant_type": "authorization_code", "code": "c"})
    second = tokens.grant({"grant_type": "authorization_code", "code": "c"})
    refreshed = tokens.grant({"grant_type": "refresh_token",
                              "refresh_token": first["refresh_token"]})
    assert tokens.email_for(refreshed["access_token"]) == "me@example.com"
    assert tokens.revoke(first["refresh_token"]) == 1
    assert tokens.email_for(refreshed["access_token"]) is None  # its access tokens die too
    with pytest.raises(OAuthError) as refused:
        tokens.grant({"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert refused.value.body() == {"error": "invalid_grant",
                                    "error_description": "Token has been expired or revoked."}
    tokens.grant({"grant_type": "refresh_token", "refresh_token": second["refresh_token"]})
    tokens.refresh_ttl = 0.0  # a Testing-status app, seven days on
    with pytest.raises(OAuthError, match="invalid_grant"):
        tokens.grant({"grant_type": "refresh_token", "refresh_token": second["refresh_token"]})
    tokens.refresh_ttl = None
    tokens.revoke()  # every grant, and refresh tokens this server never issued
    with pytest.raises(OAuthError, match="invalid_grant"):
        tokens.grant({"grant_type": "refresh_token", "refresh_token": "1//elsewhere"})
