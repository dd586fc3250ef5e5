"""Shared Drives: the local Drive server keeps them as Drive v3 does (files carry
``driveId``; ``corpora=drive`` listings; 404 without ``supportsAllDrives``), and the
real Colab notebook, on a local kernel, runs jobs from a hub on a Shared Drive (the
project's ``drive_shared_drive``): the wheel, the jobs and the results all there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.models import JobState

from .conftest import drive_project, read_job, wait_for
from .test_colab import cell_outputs, colab_kernel_env, fetch_notebook, run_notebook, set_param

S = JobState


def test_the_local_server_keeps_shared_drives_apart(drive: Any) -> None:
    from googleapiclient.errors import HttpError

    from orchestrator.hubs.drive.api import build_service

    team = drive.add_shared_drive("Team")
    api = build_service(credentials=drive.credentials(), url=drive.url)
    folder = {"name": "hub", "mimeType": "application/vnd.google-apps.folder",
              "parents": [team]}
    with pytest.raises(HttpError) as refused:  # no supportsAllDrives: no such parent
        api.files().create(body=folder, fields="id").execute()
    assert refused.value.resp.status == 404
    made = api.files().create(body=folder, fields="id, driveId",
                              supportsAllDrives=True).execute()
    assert made["driveId"] == team
    with pytest.raises(HttpError) as hidden:
        api.files().get(fileId=made["id"]).execute()
    assert hidden.value.resp.status == 404
    assert api.files().get(fileId=made["id"], supportsAllDrives=True,
                           fields="id").execute()["id"] == made["id"]
    q = "name = 'hub' and trashed = false"
    assert api.files().list(q=q).execute()["files"] == []  # My Drive only
    listed = api.files().list(q=q, corpora="drive", driveId=team, supportsAllDrives=True,
                              includeItemsFromAllDrives=True).execute()["files"]
    assert [f["id"] for f in listed] == [made["id"]]
    with pytest.raises(HttpError) as bad:  # corpora=drive needs driveId
        api.files().list(q=q, corpora="drive", supportsAllDrives=True,
                         includeItemsFromAllDrives=True).execute()
    assert bad.value.resp.status == 400
    start = api.changes().getStartPageToken(driveId=team, supportsAllDrives=True).execute()
    api.files().update(fileId=made["id"], body={"name": "hub2"},
                       supportsAllDrives=True).execute()
    mine = api.changes().list(pageToken=start["startPageToken"]).execute()["changes"]
    theirs = api.changes().list(pageToken=start["startPageToken"], driveId=team,
                                supportsAllDrives=True, includeItemsFromAllDrives=True
                                ).execute()["changes"]
    assert mine == [] and [c["fileId"] for c in theirs] == [made["id"]]


def test_notebook_runs_jobs_from_a_shared_drive_hub(project_dir: Path, drive: Any,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub folder (with a quote in its name) is on a Shared Drive, with a second
    ``blobs`` folder made by a retried create holding the wheel: the notebook finds
    the wheel there as orch would, and its worker runs the jobs from there."""
    from orchestrator.hubs.drive.api import build_service

    team = drive.add_shared_drive("Team")
    p = drive_project(project_dir, drive, settings=f'drive_shared_drive = "{team}"\n')
    p.folder = f"orch-hub/o'neil {tmp_path.name}"
    toml = project_dir / "orch.toml"
    toml.write_text(toml.read_text().replace(f'hub = "drive:orch-hub/{project_dir.parent.name}"',
                                             f'hub = "drive:{p.folder}"'))
    jobs = [p.orch("submit", "--on", "colab", "--name", f"team{i}", "save.py",
                   check=True).stdout.split()[0] for i in range(2)]
    link = p.orch("colab", "--idle", "10s", check=True).stdout.strip()
    nb = fetch_notebook(p, link)
    assert f"SHARED_DRIVE = {team!r}" in nb.cells[1].source
    # a duplicate `blobs` folder (a retried create), newer, now holding the wheel
    settings: dict[str, Any] = {}
    exec(nb.cells[1].source, settings)  # our own settings cell
    [hub] = [f for f in drive.files() if f["name"] == p.folder.split("/")[1]]
    assert hub["driveId"] == team
    [blobs] = drive.find(name="blobs", parent=hub["id"])
    [wheel] = drive.find(name=settings["WHEEL_SHA"], parent=blobs["id"])
    api = build_service(credentials=drive.credentials(), url=drive.url)
    newer = api.files().create(body={"name": "blobs", "parents": [hub["id"]],
                                     "mimeType": "application/vnd.google-apps.folder"},
                               fields="id", supportsAllDrives=True).execute()["id"]
    api.files().update(fileId=wheel["id"], addParents=newer, removeParents=blobs["id"],
                       supportsAllDrives=True).execute()

    colab_kernel_env(monkeypatch, drive, tmp_path, project_dir)
    set_param(nb, "WORK_DIR", str(tmp_path / "content"))
    done = run_notebook(nb)
    outputs = cell_outputs(done)
    assert "installed" in outputs and "2 job(s) run" in outputs, outputs
    for job_id in jobs:
        wait_for(lambda j=job_id: read_job(project_dir, j).state is S.PULLED, timeout=60,
                 message=f"{job_id} pulled")
        job = read_job(project_dir, job_id)
        assert (project_dir / "models" / job.name / "model.bin").read_bytes() == \
            job_id.encode() * 1000
    # the hub, wheel, notebook, jobs and results: all on the team's drive, none in My Drive
    on_team = {f["name"] for f in drive.files() if f.get("driveId") == team}
    assert {hub["name"], "worker.ipynb", settings["WHEEL_SHA"], *jobs} <= on_team, on_team
    assert not [f for f in drive.files() if f["name"] in (hub["name"], *jobs)
                and not f.get("driveId")]
