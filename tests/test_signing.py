"""Only this project's jobs run on its workers: manifests and assignments are signed
with a key that never enters the hub, blobs are checked against the hashes the
signed manifest names, and the Colab notebook installs only the wheel it names."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator import protocol as P
from orchestrator.config import Project
from orchestrator.hubs.folder import FolderHub
from orchestrator.identity import load_identity
from orchestrator.models import GpuNeed, JobState, OutputSpec
from orchestrator.scheduler import Scheduler
from orchestrator.signing import sign, verify
from orchestrator.store import Store
from orchestrator.submit import SubmitRequest, submit

from .conftest import orch_env, run_orch
from .test_scheduler import beat
from .test_worker import run_burst_worker

S = JobState
MARKER_SCRIPT = "import pathlib; pathlib.Path({marker!r}).write_text('ran')\n"


def planted_snapshot(hub: FolderHub, marker: Path) -> str:
    """An attacker's code blob: a script that leaves ``marker`` behind if it runs."""
    buf = io.BytesIO()
    body = MARKER_SCRIPT.format(marker=str(marker)).encode()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("evil.py")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    data = buf.getvalue()
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    hub.put_bytes(P.blob(sha), data)
    return sha


def planted_manifest(job_id: str, snapshot: str) -> P.Manifest:
    return P.Manifest(job_id=job_id, name="evil", script="evil.py", args=(), env=(),
                      snapshot=snapshot, data=(), outputs=(OutputSpec(".", ""),),
                      gpu=GpuNeed.ANY, autotrack=False)


def assigned_job(project: Project, store: Store) -> tuple[Any, FolderHub]:
    """A real job, assigned by the real scheduler to worker ``w-1``."""
    (project.root / "train.py").write_text("print('the real job')\n")
    job = submit(project, SubmitRequest(script=str(project.root / "train.py")), store=store)[0]
    hub = FolderHub(project.hub_dir)
    beat(hub, "w-1")
    Scheduler(project, store, hub).tick()
    return store.get(job.id), hub


@pytest.mark.parametrize("how", ["unsigned", "another key", "for another worker"])
def test_a_job_planted_by_another_writer_never_runs(project: Project, tmp_path: Path,
                                                    how: str) -> None:
    hub = FolderHub(project.hub_dir)
    marker = tmp_path / "pwned"
    manifest = planted_manifest("evil0001", planted_snapshot(hub, marker))
    assignment = P.Assignment(job_id="evil0001", attempt=1, worker_id="w-1",
                              assigned_at=time.time())
    if how == "another key":
        manifest, assignment = sign(manifest, "ab" * 32), sign(assignment, "ab" * 32)
    elif how == "for another worker":  # a genuine assignment, copied to this worker's inbox
        key = load_identity(project.state_dir).key
        manifest = sign(manifest, key)
        assignment = sign(dataclasses.replace(assignment, worker_id="w-other"), key)
    hub.put_doc(P.manifest("evil0001"), manifest)
    hub.put_doc(P.inbox("w-1", "evil0001", 1), assignment)
    proc = run_burst_worker(project, "w-1")
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    refused = [ln for ln in proc.stderr.splitlines() if "refused assignment evil0001.1" in ln]
    assert len(refused) == 1, proc.stderr
    assert not hub.exists(P.status("evil0001", 1))  # nothing written for it


def test_a_manifest_swapped_after_assignment_fails_the_attempt_unrun(project: Project,
                                                                   store: Store,
                                                                   tmp_path: Path) -> None:
    job, hub = assigned_job(project, store)
    assert store.get(job.id).state is S.ASSIGNED
    marker = tmp_path / "pwned"
    hub.put_doc(P.manifest(job.id), planted_manifest(job.id, planted_snapshot(hub, marker)))
    run_burst_worker(project, "w-1")
    status = hub.get_doc(P.status(job.id, 1), P.RunStatus)
    assert status is not None and status.phase is P.Phase.FAILED
    assert "unsigned manifest" in (status.error or "")
    assert not marker.exists()


def test_a_blob_swapped_after_signing_is_refused(project: Project, store: Store,
                                                 tmp_path: Path) -> None:
    job, hub = assigned_job(project, store)
    marker = tmp_path / "pwned"
    evil = planted_snapshot(hub, marker)
    swapped = project.hub_dir / P.blob(job.snapshot_sha256)
    swapped.write_bytes((project.hub_dir / P.blob(evil)).read_bytes())
    run_burst_worker(project, "w-1")
    status = hub.get_doc(P.status(job.id, 1), P.RunStatus)
    assert status is not None and status.phase is P.Phase.FAILED
    assert "arrived corrupt" in (status.error or "")
    assert not marker.exists()


def test_signatures_cover_every_field_and_the_key_never_enters_the_hub(
        project: Project, store: Store) -> None:
    key = load_identity(project.state_dir).key
    (project.root / "train.py").write_text("print(1)\n")
    job = submit(project, SubmitRequest(script=str(project.root / "train.py")), store=store)[0]
    hub = FolderHub(project.hub_dir)
    beat(hub, "w-1")
    Scheduler(project, store, hub).tick()
    manifest = hub.get_doc(P.manifest(job.id), P.Manifest)
    assert manifest is not None and verify(manifest, key) == manifest
    from orchestrator.errors import SignatureError

    for change in ({"script": "other.py"}, {"snapshot": "0" * 64}, {"args": ("-x",)}):
        with pytest.raises(SignatureError):
            verify(dataclasses.replace(manifest, **change), key)  # type: ignore[arg-type]
    for path in project.hub_dir.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def test_a_worker_without_the_key_says_how_to_give_it_one(tmp_path: Path) -> None:
    from orchestrator.hubs import claim_hub

    hub_dir = tmp_path / "shared-hub"  # a hub folder outside any project
    claim_hub(FolderHub(hub_dir), "p1")
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.worker", "--hub", str(hub_dir), "--burst",
         "--work-dir", str(tmp_path / "work")],
        env=orch_env(), capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "no hub key" in line and "--key-file" in line and "ORCH_HUB_KEY" in line
    bad = run_orch(tmp_path, "worker", "--hub", str(hub_dir), "--burst", "--key-file",
                   str(tmp_path / "nope.json"))
    assert bad.returncode == 2 and "cannot read the hub key" in bad.stderr


def test_the_notebook_installs_only_the_wheel_it_names(drive: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The install cell refuses a wheel whose sha256 is not the settings cell's."""
    import hashlib

    from google.oauth2.credentials import Credentials

    from orchestrator.places.colab_cells import install_orch

    from .conftest import drive_hub

    folder = f"unit/{tmp_path.parent.name}-{tmp_path.name}"
    named = hashlib.sha256(b"the wheel orch colab built").hexdigest()
    drive_hub(folder).put_bytes(P.blob(named), b"a wheel someone swapped in")
    creds = Credentials(token=drive.issue_token(ttl=600))
    monkeypatch.setenv("ORCH_DRIVE_ROOT_URL", drive.url)
    with pytest.raises(SystemExit, match="does not match WHEEL_SHA"):
        install_orch(creds, folder, "", "orch-0.2.0-py3-none-any.whl", named,
                     str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()
