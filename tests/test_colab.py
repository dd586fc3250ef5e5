"""Colab notebooks: generated with nbformat, put on the Drive hub by `orch colab`,
and executed with nbclient on a local kernel (a stand-in ``google.colab`` signs in
to the local Drive server) so that jobs submitted locally run inside the notebook
and their models come back to the project."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from orchestrator.models import JobState
from tests.drive_project import DriveProject

from .conftest import REPO, drive_project, read_job, wait_for

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

S = JobState
STANDIN = REPO / "orchestrator" / "sandbox" / "standin"


def colab_kernel_env(monkeypatch: pytest.MonkeyPatch, fake: Any, tmp_path: Path,
                     project_dir: Path) -> None:
    """The environment a Colab kernel would give the notebook, for the local server."""
    adc = tmp_path / "adc.json"
    creds = fake.credentials()
    # google-auth always refreshes authorized-user files at Google's own endpoint, so
    # the stand-in hands over a ready access token, as Colab's sign-in does.
    adc.write_text(json.dumps({
        "type": "authorized_user", "client_id": creds.client_id,
        "client_secret": creds.client_secret, "refresh_token": creds.refresh_token,
        "token": fake.issue_token(ttl=24 * 3600), "expiry": "2099-01-01T00:00:00Z"}))
    monkeypatch.setenv("ORCH_SANDBOX_ADC", str(adc))
    from orchestrator.identity import load_identity

    # the project's key, as the Colab secret ORCH_HUB_KEY the user added
    monkeypatch.setenv("ORCH_SANDBOX_SECRET_ORCH_HUB_KEY",
                       load_identity(project_dir / ".orch").key)
    monkeypatch.setenv("ORCH_DRIVE_ROOT_URL", fake.url)
    monkeypatch.setenv("ORCH_NOTEBOOK_PIP_TARGET", str(tmp_path / "site"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(STANDIN), str(REPO)]))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)


def fetch_notebook(p: DriveProject, link: str) -> Any:
    assert link.startswith("https://colab.research.google.com/drive/")
    nb = nbformat.reads(p.fake.content(link.rsplit("/", 1)[1]).decode(), as_version=4)
    nbformat.validate(nb)
    return nb


def set_param(nb: Any, name: str, value: Any) -> None:
    cell = nb.cells[1]
    lines = [f"{name} = {value!r}" if ln.startswith(f"{name} = ") else ln
             for ln in cell.source.splitlines()]
    cell.source = "\n".join(lines)


def cell_outputs(nb: Any) -> str:
    """What the notebook's code cells printed so far (streams and errors), for failures."""
    parts: list[str] = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            text = out.get("text") or "\n".join(out.get("traceback", [])[-3:]) or \
                out.get("ename", "")
            parts.append(f"[cell {i}] {text}")
    return "".join(parts)[-4000:] or "(no output yet)"


def run_notebook(nb: Any, timeout: float = 300) -> Any:
    return nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3").execute()


def test_worker_notebook_runs_jobs_sent_to_colab(project_dir: Path, drive: Any,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    p = drive_project(project_dir, drive)
    link = p.orch("colab", "--idle", "10s", check=True).stdout.strip()
    nb = fetch_notebook(p, link)
    assert nb.metadata["accelerator"] == "GPU"
    queued = p.orch("submit", "--on", "colab", "save.py", check=True)
    assert "no Colab worker is running" in queued.stderr
    jobs = [queued.stdout.split()[0],
            p.orch("submit", "--on", "colab", "--name", "second", "save.py",
                   check=True).stdout.split()[0]]
    colab_kernel_env(monkeypatch, drive, tmp_path, project_dir)
    set_param(nb, "WORK_DIR", str(tmp_path / "content"))
    done = run_notebook(nb)
    outputs = "".join(o.get("text", "") for c in done.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "signed in to Drive" in outputs and "installed" in outputs
    assert "2 job(s) run" in outputs
    for job_id in jobs:
        wait_for(lambda j=job_id: read_job(project_dir, j).state is S.PULLED, timeout=60,
                 message=f"{job_id} pulled")
        job = read_job(project_dir, job_id)
        assert job.worker_id and job.worker_id.startswith("colab-")
        model = project_dir / "models" / job.name / "model.bin"
        assert model.read_bytes() == job_id.encode() * 1000


def test_per_job_notebook_runs_one_job_and_stops(project_dir: Path, drive: Any, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-job notebook's worker runs its job and no other, even when a daemon has
    assigned it another one first (written here by the daemon's own assignment code
    while the daemon is stopped); the other job is re-queued once the worker is gone."""
    import threading
    import time

    from orchestrator import protocol as P
    from orchestrator.assign import Assigner
    from orchestrator.config import find_project
    from orchestrator.hubs import project_hub
    from orchestrator.identity import load_identity
    from orchestrator.models import WorkerInfo
    from orchestrator.store import Store

    p = drive_project(project_dir, drive)
    first = p.orch("submit", "--on", "colab", "save.py", check=True).stdout.split()[0]
    other = p.orch("submit", "--on", "colab", "--name", "later", "save.py",
                   check=True).stdout.split()[0]
    link = p.orch("colab", "--job", first, check=True).stdout.strip()
    nb = fetch_notebook(p, link)
    assert f"JOB = {first!r}" in nb.cells[1].source
    p.orch("daemon", "stop", check=True)
    colab_kernel_env(monkeypatch, drive, tmp_path, project_dir)
    set_param(nb, "WORK_DIR", str(tmp_path / "content"))
    errors: list[BaseException] = []

    def execute() -> None:
        try:
            run_notebook(nb)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    runner = threading.Thread(target=execute)
    runner.start()
    project = find_project(project_dir)
    hub = project_hub(project, "remote")
    [worker_id] = wait_for(lambda: hub.list(P.WORKERS), timeout=120,
                           message="the notebook's worker on the hub")
    worker = WorkerInfo(id=worker_id, name="colab", kind="colab", host="colab", pid=None,
                        gpu=False, gpu_name=None, state="idle", job_id=None, attempt=None,
                        last_seen=time.time(), gone=False, hub="remote")
    with Store(project.state_dir / "state.db") as store:
        assigner = Assigner(project, store, {"remote": hub}, [], None,  # type: ignore[arg-type]
                            load_identity(project.state_dir).key)
        assert assigner.start(store.get(other), worker)
    assert read_job(project_dir, other).state is S.ASSIGNED
    p.orch("daemon", "start", check=True)  # now it assigns the worker its own job
    runner.join(180)
    assert not runner.is_alive() and not errors, f"{errors}\n{cell_outputs(nb)}"
    outputs = cell_outputs(nb)
    assert "1 job(s) run" in outputs and f"refused assignment {other}.1" in outputs, outputs
    wait_for(lambda: read_job(project_dir, first).state is S.PULLED, timeout=60,
             message="the notebook's job pulled")
    assert not hub.exists(P.status(other, 1))  # never started by the per-job worker
    wait_for(lambda: read_job(project_dir, other).state is S.QUEUED, timeout=60,
             message="the other job re-queued once the worker is gone")
    assert read_job(project_dir, other).attempt == 2


def test_notebooks_are_valid_and_the_wheel_is_reproducible() -> None:
    from orchestrator.places.colab_notebook import NotebookSettings, build_wheel, notebook

    name, wheel = build_wheel()
    assert name.startswith("orch-") and name.endswith("-py3-none-any.whl")
    assert build_wheel()[1] == wheel
    import zipfile
    from io import BytesIO

    names = zipfile.ZipFile(BytesIO(wheel)).namelist()
    assert "orchestrator/worker.py" in names and any(n.endswith("/RECORD") for n in names)
    assert "orchestrator/places/colab_cells.py" in names
    for job in (None, "abc123"):
        nb = notebook(NotebookSettings("orch-hub/p", name, "0" * 64, job=job))
        nbformat.validate(nb)
        assert nb.nbformat == 4
        source = "\n".join(c.source for c in nb.cells)
        assert "/content/drive" not in source.replace("/content/drive`", "")  # API, not mount
        assert "auth.authenticate_user()" in source and "nvidia-smi" in source


def test_committed_notebooks_are_what_the_generator_renders() -> None:
    """colab_runners/*.ipynb are rendered from orchestrator/places/colab_cells.py; after
    changing the cells, run `python -m orchestrator.places.colab_notebook colab_runners`."""
    from orchestrator.places.colab_notebook import committed

    folder = REPO / "colab_runners"
    for name, text in committed().items():
        assert (folder / name).read_text(encoding="utf-8") == text, (
            f"colab_runners/{name} is stale: run `python -m orchestrator.places.colab_notebook "
            "colab_runners`")
    for name in committed():
        nb = nbformat.read(folder / name, as_version=4)
        nbformat.validate(nb)
        compile("\n".join(c.source for c in nb.cells if c.cell_type == "code"), name, "exec")


def test_colab_needs_a_drive_hub(project_dir: Path) -> None:
    from .conftest import run_orch

    run_orch(project_dir, "init", check=True)
    proc = run_orch(project_dir, "colab")
    assert proc.returncode == 2 and "needs a Drive hub" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_killed_kernel_then_rerun_resumes_from_the_checkpoint(project_dir: Path, drive: Any,
                                                             tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """A Colab runtime that disconnects mid-training: the job's lease expires, it is
    re-queued, and the notebook run again resumes it from its checkpoint on Drive."""
    import threading

    from orchestrator import protocol as P
    from orchestrator.store import Store

    from .conftest import TINY_KERAS_SCRIPT

    p = drive_project(project_dir, drive, lease=5.0)
    (project_dir / "train.py").write_text(TINY_KERAS_SCRIPT)
    job_id = p.orch("submit", "--on", "colab", "--name", "resume", "train.py", "--",
                    "--epochs", "10", "--sleep", "0.6", check=True).stdout.split()[0]
    link = p.orch("colab", "--idle", "10s", check=True).stdout.strip()
    colab_kernel_env(monkeypatch, drive, tmp_path, project_dir)
    ckpt = f"{p.folder}/{P.ckpt(job_id, 1)}"

    first = fetch_notebook(p, link)
    set_param(first, "WORK_DIR", str(tmp_path / "content-1"))
    set_param(first, "HEARTBEAT_SECONDS", 1.0)
    client = nbclient.NotebookClient(first, timeout=300, kernel_name="python3")
    errors: list[BaseException] = []

    def execute() -> None:
        try:
            client.execute()
        except BaseException as exc:  # noqa: BLE001 - the kernel dies: expected
            errors.append(exc)

    runner = threading.Thread(target=execute)
    runner.start()

    def three_epochs() -> bool:
        assert not errors, f"the notebook failed before the kill: {errors[0]!r}\n" + \
            cell_outputs(first)
        return ckpt in drive.paths() and \
            (read_job(project_dir, job_id).progress.get("completed_epochs") or 0) >= 3

    try:
        wait_for(three_epochs, timeout=180, interval=0.3,
                 message="3 epochs and a checkpoint on Drive")
    except AssertionError as exc:  # say where the notebook stood
        raise AssertionError(f"{exc}\nnotebook so far:\n{cell_outputs(first)}") from None
    assert client.km is not None and client.km.provisioner is not None
    import signal

    os.kill(client.km.provisioner.pid, signal.SIGKILL)  # the runtime disconnects
    runner.join(60)
    assert errors, "the notebook should have died with its kernel"
    wait_for(lambda: read_job(project_dir, job_id).attempt == 2, timeout=60,
             message="lease expired; re-queued as attempt 2")

    second = fetch_notebook(p, link)
    set_param(second, "WORK_DIR", str(tmp_path / "content-2"))
    set_param(second, "HEARTBEAT_SECONDS", 1.0)
    run_notebook(second)
    wait_for(lambda: read_job(project_dir, job_id).state is S.PULLED, timeout=60,
             message="resumed job pulled")
    with Store(project_dir / ".orch" / "state.db") as store:
        attempts = store.attempts(job_id)
    assert [a.outcome for a in attempts] == ["LOST", "SUCCEEDED"]
    assert attempts[1].resumed_from_epoch is not None and attempts[1].resumed_from_epoch >= 3
    detail = p.orch("status", job_id, check=True).stdout
    assert "try 2" in detail and "resumed at epoch" in detail
    lost_log = p.orch("logs", job_id, "--attempt", "1", check=True).stdout
    assert "Epoch 1/10" in lost_log  # the lost attempt's partial log, from Drive
    assert "saved model.keras" not in lost_log
    assert sorted(x.name for x in (project_dir / "models" / "resume").iterdir()) == \
        ["logs", "model.keras"]


def test_install_cell_reads_every_duplicate_of_a_folder(project_dir: Path, drive: Any,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two parties creating the hub's ``blobs`` folder at once leave two on Drive; the
    wheel may be in the newer one, which orch reads and the notebook must read too. A
    quote in the hub folder's name does not break the notebook's queries."""
    import sys

    from orchestrator.hubs.drive.api import build_service
    from orchestrator.places.colab_cells import install_orch
    from tests.drive_project import DriveProject

    p = DriveProject(project_dir, drive, f"orch-hub/o'brien {tmp_path.name}")
    link = p.orch("colab", check=True).stdout.strip()
    settings: dict[str, Any] = {}
    exec(fetch_notebook(p, link).cells[1].source, settings)  # our own settings cell
    sha = settings["WHEEL_SHA"]
    [hub] = drive.find(name=p.folder.split("/")[1])
    hub_id = hub["id"]
    [blobs] = drive.find(name="blobs", parent=hub_id)
    first = blobs["id"]
    [wheel] = drive.find(name=sha, parent=first)
    api = build_service(credentials=drive.credentials(), url=drive.url)
    newer = api.files().create(body={"name": "blobs", "parents": [hub_id],
                                     "mimeType": "application/vnd.google-apps.folder"},
                               fields="id").execute()["id"]
    api.files().update(fileId=wheel["id"], addParents=newer, removeParents=first).execute()
    assert drive.find(name=sha, parent=newer) and not drive.find(name=sha, parent=first)

    monkeypatch.setenv("ORCH_DRIVE_ROOT_URL", drive.url)
    monkeypatch.setenv("ORCH_NOTEBOOK_PIP_TARGET", str(tmp_path / "site"))
    monkeypatch.setattr(sys, "path", list(sys.path))  # the cell prepends its pip target
    install_orch(drive.credentials(), p.folder, "", settings["WHEEL_NAME"], sha,
                 str(tmp_path / "content"))
    assert (tmp_path / "content" / settings["WHEEL_NAME"]).is_file()
    assert (tmp_path / "site" / "orchestrator" / "worker.py").is_file()
