"""No credential ever leaves the machine in a code snapshot: the credential filter
(names and contents, any letter case, any depth), symlinks to outside the project,
orch's own credential files, `orch submit --dry-run`, no silent project creation,
and a private `.orch/`."""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest

from orchestrator import snapshot
from orchestrator.credentials import why_secret

from .conftest import run_orch, write

#: One file of each class of credential developers of this field keep in projects
#: and home folders; each holds a unique marker that must never reach a snapshot.
CREDENTIALS = [
    ".ssh/id_rsa", ".ssh/config", "id_ed25519", "keys/id_ECDSA", "deploy_rsa", "putty.PPK",
    "server.pem", "tls/private.KEY", "cert.p12", "store.jks", "vault.kdbx", ".gnupg/pubring.kbx",
    ".env", ".ENV.production", "prod.env", ".envrc", "config/secrets.toml", "secret.yaml",
    ".streamlit/secrets.toml", "credentials", ".git-credentials", ".htpasswd",
    ".aws/credentials", ".azure/accessTokens.json", "gcloud/application_default_credentials.json",
    "application_default_credentials.json", "my-service-account.json", "SERVICE_ACCOUNT_KEY.json",
    ".kube/config", "kubeconfig", ".boto", ".s3cfg", "rclone.conf", "terraform.tfstate",
    "prod.tfvars", "client_secret_123.apps.googleusercontent.com.json", "client_secrets.json",
    "token.json", "token.pickle", "drive_token.pickle", "mycreds.txt", "credentials.json",
    ".netrc", "_netrc", ".npmrc", ".pypirc", ".docker/config.json", ".cargo/credentials.toml",
    ".kaggle/kaggle.json", "kaggle.json", ".huggingface/token", ".databrickscfg",
    "nested/deep/.env.local",
]

SERVICE_ACCOUNT = ('{"type": "service_account", "project_id": "p", "private_key": '
                   '"-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n"}')
PEM = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
       "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
       "-----END OPENSSH PRIVATE KEY-----\n")


def shipped_bytes(project_dir: Path, job_id: str) -> bytes:
    """Every byte of the snapshot blob a job was given."""
    from orchestrator.store import Store

    with Store(project_dir / ".orch" / "state.db") as store:
        sha = store.get(job_id).snapshot_sha256
    blob = project_dir / ".orch" / "hub" / "blobs" / sha
    out = b""
    with tarfile.open(blob) as tar:
        for member in tar.getmembers():
            f = tar.extractfile(member)
            out += member.name.encode() + b"\0" + (f.read() if f else b"")
    return out


def test_no_class_of_credential_reaches_a_snapshot(project_dir: Path) -> None:
    write(project_dir, "train.py", "print('train')\n")
    for i, rel in enumerate(CREDENTIALS):
        write(project_dir, rel, f"SECRET-{i:03d}")
    # key material without a telltale name, found by content
    write(project_dir, "my-project-1234-5678abcd.json",
          SERVICE_ACCOUNT.replace('"p"', '"SECRET-900"'))
    write(project_dir, "notes/server-notes.md", "SECRET-901\n" + PEM)
    write(project_dir, "oauth.json", '{"refresh_token": "1//SECRET-902-abcdefgh"}')
    # look-alikes that are ordinary files do ship
    write(project_dir, "tokenizer.json", '{"word_index": {}}')
    write(project_dir, "credentials.py", "def load(): return None\n")
    write(project_dir, "scan.py", 'MARKER = b"PRIVATE KEY-----"  # what a scanner looks for\n')
    write(project_dir, "id_ed25519.pub", "ssh-ed25519 AAAA public")
    proc = run_orch(project_dir, "submit", "train.py", check=True)
    data = shipped_bytes(project_dir, proc.stdout.split()[0])
    assert b"SECRET-" not in data
    for ordinary in (b"tokenizer.json", b"credentials.py", b"scan.py", b"id_ed25519.pub",
                     b"train.py"):
        assert ordinary + b"\0" in data, ordinary
    assert "credential file(s) out of the snapshot" in proc.stderr
    assert "--dry-run" in proc.stderr


@pytest.mark.parametrize("rel", CREDENTIALS)
def test_each_credential_class_is_named_with_its_reason(tmp_path: Path, rel: str) -> None:
    path = write(tmp_path, rel, "x")
    assert why_secret(rel, path), rel
    assert why_secret(rel.upper(), path), f"{rel} in upper case"


def test_a_symlink_to_outside_the_project_is_never_followed(project_dir: Path,
                                                            tmp_path: Path) -> None:
    key = write(tmp_path / "home" / ".ssh", "id_rsa", "SECRET-KEY-BYTES")
    write(project_dir, "train.py", "print(1)\n")
    (project_dir / "notes.txt").symlink_to(key)
    (project_dir / "data").symlink_to(key.parent, target_is_directory=True)
    write(project_dir, "inside.txt", "shared")
    (project_dir / "alias.txt").symlink_to(project_dir / "inside.txt")
    proc = run_orch(project_dir, "submit", "train.py", check=True)
    assert "left out notes.txt: it is a symlink to" in proc.stderr
    assert "ship data from outside with --data" in proc.stderr
    data = shipped_bytes(project_dir, proc.stdout.split()[0])
    assert b"SECRET-KEY-BYTES" not in data
    assert b"alias.txt\0shared" in data  # a link inside the project ships its file


def test_orchs_own_credentials_are_left_out_whatever_their_name(project_dir: Path) -> None:
    (project_dir / "orch.toml").write_text(
        (project_dir / "orch.toml").read_text()
        + 'drive_credentials = "auth/mine.dat"\ndrive_client_secrets = "oauth/app.dat"\n')
    write(project_dir, "train.py", "print(1)\n")
    write(project_dir, "auth/mine.dat", "SECRET-CREDS")
    write(project_dir, "oauth/app.dat", "SECRET-CLIENT")
    out = run_orch(project_dir, "submit", "--dry-run", "train.py", check=True).stdout
    assert "auth/mine.dat" in out and "orch's own credentials" in out
    assert "oauth/app.dat" in out
    proc = run_orch(project_dir, "submit", "train.py", check=True)
    assert b"SECRET-" not in shipped_bytes(project_dir, proc.stdout.split()[0])


def test_dry_run_lists_what_ships_and_why_the_rest_does_not(project_dir: Path,
                                                            tmp_path: Path) -> None:
    write(project_dir, "train.py", "print(1)\n")
    write(project_dir, "lib/util.py", "X = 1\n")
    write(project_dir, ".env", "SECRET=1")
    write(project_dir, ".venv/lib/site.py", "x")
    write(project_dir, "models/old/model.h5", "old")
    write(project_dir, ".orchignore", "scratch/\n")
    write(project_dir, "scratch/tmp.txt", "x")
    write(project_dir, "big.csv", "a,b\n")
    proc = run_orch(project_dir, "submit", "--dry-run", "--data", "big.csv", "train.py",
                    check=True)
    out = proc.stdout
    shipped = out.split("left out:")[0]
    assert "train.py" in shipped and "lib/util.py" in shipped and ".orchignore" in shipped
    for rel, why in [(".env", "a dotenv file (credential)"), (".venv/", "environment or cache"),
                     ("models/old/model.h5", "outputs folder"),
                     ("scratch/tmp.txt", ".orchignore"), ("big.csv", "shipped as --data")]:
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(rel))
        assert why in line, line
    assert "nothing was queued" in out
    # nothing stored, nothing started
    assert not (project_dir / ".orch").exists()
    status = run_orch(project_dir, "status")
    assert status.returncode == 2  # still not a project with state


def test_submit_outside_a_project_asks_for_orch_init(tmp_path: Path) -> None:
    bare = tmp_path / "home"
    bare.mkdir()
    write(bare, "train.py", "print(1)\n")
    if any((p / m).exists() for p in bare.parents for m in ("pyproject.toml", "orch.toml",
                                                             ".orch")):
        pytest.skip("a folder above tmp_path is a project")
    proc = run_orch(bare, "submit", "train.py")
    assert proc.returncode == 2 and "orch init" in proc.stderr
    assert "Traceback" not in proc.stderr and not (bare / ".orch").exists()
    # `orch init` refuses the home folder (and /) unless forced
    home = {"HOME": str(bare)}
    refused = run_orch(bare, "init", env=home)
    assert refused.returncode == 2 and "home folder" in refused.stderr
    assert not (bare / ".orch").exists()
    assert run_orch(bare, "init", "--force", env=home, check=True).stdout.startswith(
        "initialised")
    # a home folder that is not a project is refused by submit even with an orch.toml
    (bare / ".orch").rename(tmp_path / "gone")
    write(bare, "orch.toml", "")
    proc = run_orch(bare, "submit", "train.py", env=home)
    assert proc.returncode == 2 and "home folder" in proc.stderr


def test_the_state_folder_is_private_after_a_submit(project_dir: Path) -> None:
    write(project_dir, "train.py", "print(1)\n")
    run_orch(project_dir, "submit", "--env", "API_KEY=hunter2", "train.py", check=True)
    assert stat.S_IMODE((project_dir / ".orch").stat().st_mode) == 0o700
    assert stat.S_IMODE((project_dir / ".orch" / "project.json").stat().st_mode) == 0o600


def test_plan_reports_junk_folders_once(tmp_path: Path) -> None:
    for i in range(50):
        write(tmp_path, f".venv/lib/m{i}.py", "x")
    write(tmp_path, "train.py", "x")
    plan = snapshot.plan(tmp_path)
    assert [e.rel for e in plan.excluded] == [".venv/"]
    assert [n for n, _ in plan.files] == ["train.py"]
    assert not os.path.exists(tmp_path / ".orch")


def test_the_glob_matcher_agrees_with_fnmatch() -> None:
    """orch's fast matcher (``*`` only) gives fnmatch's answers, on every pattern it uses
    and on random ones."""
    import fnmatch

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from orchestrator.credentials import NOT_CREDENTIALS, RULES, glob_match

    patterns = [p for rule in RULES for p in rule.names] + list(NOT_CREDENTIALS)
    names = st.text(alphabet="ab._-*", max_size=8)

    @settings(max_examples=400, deadline=None)
    @given(name=names, pattern=st.one_of(st.sampled_from(patterns), names))
    def agree(name: str, pattern: str) -> None:
        assert glob_match(name, pattern) == fnmatch.fnmatchcase(name, pattern)

    agree()
    for pattern in patterns:
        for name in (pattern.replace("*", ""), pattern.replace("*", "xy"), "x" + pattern):
            assert glob_match(name, pattern) == fnmatch.fnmatchcase(name, pattern)
