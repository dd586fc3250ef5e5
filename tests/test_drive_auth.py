"""Signing in to Drive with pydrive2's flows against the local Drive server's OAuth
endpoint, and using the saved credentials (refresh included) with the real client."""

from __future__ import annotations

import json
import socket
import stat
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import UsageError
from orchestrator.hubs.drive.auth import code_from, load_credentials, sign_in

from .conftest import drive_hub, run_orch, wait_for


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
