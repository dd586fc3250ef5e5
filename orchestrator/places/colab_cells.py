"""The code cells of orch's Colab notebooks, as real Python: linted, typed, tested.

The notebook generator (:mod:`.colab_notebook`) copies each function below into a
code cell of its own, followed by the line that calls it, after a first cell of
settings (``HUB_FOLDER = …``). So every function here must stand alone: it
imports what it needs inside, and uses nothing of orch until :func:`install_orch`
has installed it. Run in order, the cells sign in to Drive, show the GPU, install
the exact orch that submitted the jobs (a wheel stored as a hub blob, checked by
its sha256), and run the worker until it has been idle for a while.

Inside Colab the worker talks to Drive through the API, not the ``/content/drive``
mount (which shows other clients' writes late). ``ORCH_DRIVE_ROOT_URL`` in the
kernel's environment points it at another Drive endpoint (the tests' local server).
"""

from __future__ import annotations

from typing import Any


def sign_in(drive_credentials: str) -> Any:
    """Sign in to Google Drive and reach the project's hub. Opened in the browser,
    Colab asks you once. Started by `orch colab --launch`, nobody can answer that
    question (the colab CLI's `exec` shows no consent dialog), so the launcher puts
    your orch Drive sign-in in DRIVE_CREDENTIALS: only in the copy it sends to the
    runtime, never in the notebook on Drive."""
    import json

    scopes = ["https://www.googleapis.com/auth/drive"]
    if drive_credentials:
        info = json.loads(drive_credentials)
        if info.get("type") == "service_account":
            from google.oauth2 import service_account

            creds: Any = service_account.Credentials.from_service_account_info(
                info, scopes=scopes)
        else:  # an authorized user: refreshed at its own token endpoint
            from google.oauth2.credentials import Credentials

            creds = Credentials(None, refresh_token=info["refresh_token"],
                                token_uri=info["token_uri"], client_id=info["client_id"],
                                client_secret=info["client_secret"])
        print("signed in to Drive (the launcher's sign-in)")
        return creds
    import google.auth
    from google.colab import auth

    auth.authenticate_user()
    creds, _ = google.auth.default(scopes=scopes)
    print("signed in to Drive")
    return creds


def show_gpu() -> str | None:
    """Show the GPU this runtime got (none is fine for CPU jobs); return its name."""
    import subprocess

    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        listed = ""
    name = listed.split("\n")[0].strip() or None
    print(f"GPU: {name}" if name else "no GPU in this runtime")
    return name


def install_orch(creds: Any, hub_folder: str, shared_drive: str, wheel_name: str,
                 wheel_sha: str, work_dir: str) -> None:
    """Install the orch that submitted the jobs: a wheel stored on the hub as a blob,
    refused unless its sha256 is the one in the settings cell. The hub folder is
    under My Drive, or under the Shared Drive ``shared_drive`` (its id)."""
    import hashlib
    import importlib
    import io
    import os
    import subprocess
    import sys

    from googleapiclient.discovery import build
    from googleapiclient.http import MediaIoBaseDownload

    if not wheel_sha:
        raise SystemExit("fill in the settings cell first: run `orch colab --settings` in "
                         "your project and paste what it prints")
    root = os.environ.get("ORCH_DRIVE_ROOT_URL")
    endpoint = {"api_endpoint": root.rstrip("/") + "/drive/v3/"} if root else None
    drive = build("drive", "v3", credentials=creds, static_discovery=True,
                  client_options=endpoint)

    where: dict[str, Any] = {"supportsAllDrives": True, "includeItemsFromAllDrives": True}
    if shared_drive:
        where.update(corpora="drive", driveId=shared_drive)

    def children(parents: list[str], name: str) -> list[str]:
        """Every file named ``name`` in any of ``parents``, oldest first: Drive allows
        duplicate folders (two parties creating one at once), and orch reads them all."""
        escaped = name.replace("\\", "\\\\").replace("'", "\\'")
        found: list[dict[str, str]] = []
        for parent in parents:
            q = f"name = '{escaped}' and '{parent}' in parents and trashed = false"
            found += drive.files().list(q=q, fields="files(id, createdTime)", pageSize=100,
                                        **where).execute()["files"]
        if not found:
            raise SystemExit(f"{name} not found on Drive: was `orch colab` run for this "
                             "project?")
        return [f["id"] for f in sorted(found, key=lambda f: f["createdTime"])]

    level = [shared_drive or drive.files().get(fileId="root", fields="id").execute()["id"]]
    for part in (hub_folder + "/blobs/" + wheel_sha).split("/"):
        level = children(level, part)
    parent = level[-1]  # the newest copy of the wheel
    buf = io.BytesIO()
    down = MediaIoBaseDownload(buf, drive.files().get_media(fileId=parent,
                                                            supportsAllDrives=True))
    done = False
    while not done:
        _, done = down.next_chunk()
    if hashlib.sha256(buf.getvalue()).hexdigest() != wheel_sha:
        raise SystemExit("the orch wheel on the hub does not match WHEEL_SHA: refusing to "
                         "install it")
    os.makedirs(work_dir, exist_ok=True)
    wheel = os.path.join(work_dir, wheel_name)
    with open(wheel, "wb") as f:
        f.write(buf.getvalue())
    target = os.environ.get("ORCH_NOTEBOOK_PIP_TARGET")  # tests: keep the kernel's env clean
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall",
           wheel] + (["--target", target] if target else [])
    subprocess.run(cmd, check=True)
    if target:  # a folder that did not exist when the kernel started: look again
        sys.path_importer_cache.pop(target, None)
        sys.path.insert(0, target)
    importlib.invalidate_caches()  # a folder pip made after start-up is looked at again
    import orchestrator

    print("orch", orchestrator.__version__, "installed:",
          os.path.dirname(os.path.dirname(orchestrator.__file__)))


def run_worker(creds: Any, hub_folder: str, shared_drive: str, hub_key: str,
               gpu_name: str | None, job: str | None, idle_minutes: float,
               session_hours: float, work_dir: str, worker_name: str,
               heartbeat_seconds: float) -> int:
    """Run the worker until it has been idle for ``idle_minutes`` (or, with ``job``,
    until that job ran, taking no other). It runs only jobs signed with your project's key: the
    ``hub_key`` setting, else the Colab secret ORCH_HUB_KEY. Returns the number of
    jobs run."""
    from pathlib import Path

    from orchestrator.hubs.drive import DriveHub
    from orchestrator.worker import HUB_RETRIES, Worker, WorkerConfig

    key = hub_key
    if not key:
        try:
            from google.colab import userdata

            key = userdata.get("ORCH_HUB_KEY")
        except Exception:  # noqa: BLE001 - no such secret, or no access granted
            key = ""
    if not key:
        raise SystemExit("this notebook needs your project's key: add the Colab secret "
                         "ORCH_HUB_KEY (the key icon in the left bar; `orch colab --key` "
                         "prints the value) and let this notebook access it")

    # few tries per request (as `orch worker`): the worker's own backoff rides out outages
    hub = DriveHub(hub_folder, credentials=creds, staleness=2.0,
                   shared_drive=shared_drive or None, retries=HUB_RETRIES)
    config = WorkerConfig(
        hub="drive:" + hub_folder, name=worker_name, kind="colab", work_dir=Path(work_dir),
        idle_timeout=idle_minutes * 60, heartbeat_interval=heartbeat_seconds,
        poll_interval=2.0, check_interval=5.0, log_interval=10.0,
        gpu="0" if gpu_name else None, gpu_name=gpu_name, session_hours=session_hours,
        session_start="runtime",  # the session's clock starts with the runtime, not this cell
        only_job=job, key=key)
    worker = Worker(config, hub=hub)
    print(f"worker {worker.id} on {hub.url}: waiting for jobs (Ctrl-M I to stop)")
    ran = worker.run()
    print(f"worker {worker.id} finished: {ran} job(s) run")
    return ran
