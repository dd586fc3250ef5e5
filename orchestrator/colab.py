"""Colab notebooks that run the orch worker against the project's Drive hub.

Two notebooks, generated with nbformat (v4):

- the **worker notebook**: signs in to Drive inside Colab, shows the GPU it got,
  installs *this* orch (a wheel built from the running code and stored as a hub
  blob, so no release is needed), and runs the worker until it has been idle for a
  while: one click, any number of jobs;
- the **per-job notebook**: the same, told to run one job and stop.

Inside Colab the worker talks to Drive through the API (not the ``/content/drive``
mount, which shows other clients' writes late). ``ORCH_DRIVE_ROOT_URL`` in the
kernel's environment points it at another Drive endpoint (the tests' local server).
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

from . import __version__
from .logs import get_logger

log = get_logger(__name__)

COLAB_URL = "https://colab.research.google.com/drive/{file_id}"
NOTEBOOKS = "notebooks"
FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def build_wheel() -> tuple[str, bytes]:
    """A wheel of the running orch package: ``(file name, bytes)``, byte-identical
    for identical code (fixed times, sorted entries), so its blob is stored once."""
    package = Path(__file__).resolve().parent
    name = f"orch-{__version__}-py3-none-any.whl"
    dist = f"orch-{__version__}.dist-info"
    files: list[tuple[str, bytes]] = []
    for path in sorted(package.rglob("*.py")):
        files.append((f"orchestrator/{path.relative_to(package).as_posix()}", path.read_bytes()))
    files += [
        (f"{dist}/METADATA", (f"Metadata-Version: 2.1\nName: orch\nVersion: {__version__}\n"
                              "Summary: Hybrid local/Colab training orchestrator\n").encode()),
        (f"{dist}/WHEEL", b"Wheel-Version: 1.0\nGenerator: orch\nRoot-Is-Purelib: true\n"
                          b"Tag: py3-none-any\n"),
        (f"{dist}/entry_points.txt", b"[console_scripts]\norch = orchestrator.cli:main\n"),
    ]
    record = [f"{n},sha256={_b64sha(d)},{len(d)}" for n, d in files] + [f"{dist}/RECORD,,"]
    files.append((f"{dist}/RECORD", ("\n".join(record) + "\n").encode()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in files:
            info = zipfile.ZipInfo(arcname, FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return name, out.getvalue()


def _b64sha(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


SIGN_IN = '''\
# Sign in to Google Drive (Colab asks you once) and reach the project's hub.
import os
from google.colab import auth
auth.authenticate_user()
import google.auth
CREDS, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/drive"])
print("signed in to Drive")'''

GPU = '''\
# The GPU this runtime got (none is fine for CPU jobs).
import subprocess
try:
    print(subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
          or "no GPU in this runtime")
except FileNotFoundError:
    print("no GPU in this runtime")'''

INSTALL = '''\
# Install the orch that submitted the jobs: a wheel stored on the hub as a blob.
import io, subprocess, sys
from googleapiclient.discovery import build
from googleapiclient.http import MediaIoBaseDownload
root = os.environ.get("ORCH_DRIVE_ROOT_URL")
endpoint = {"api_endpoint": root.rstrip("/") + "/drive/v3/"} if root else None
drive = build("drive", "v3", credentials=CREDS, static_discovery=True, client_options=endpoint)

def child(parent, name):
    q = (f"name = '{name}' and '{parent}' in parents and trashed = false")
    found = drive.files().list(q=q, fields="files(id, createdTime)", pageSize=10,
                               supportsAllDrives=True, includeItemsFromAllDrives=True
                               ).execute()["files"]
    if not found:
        raise SystemExit(f"{name} not found on Drive: was `orch colab` run for this project?")
    return sorted(found, key=lambda f: f["createdTime"])[0]["id"]

parent = drive.files().get(fileId="root", fields="id").execute()["id"]
for part in (HUB_FOLDER + "/blobs/" + WHEEL_SHA).split("/"):
    parent = child(parent, part)
buf = io.BytesIO()
down = MediaIoBaseDownload(buf, drive.files().get_media(fileId=parent))
done = False
while not done:
    _, done = down.next_chunk()
wheel = os.path.join(WORK_DIR, WHEEL_NAME)
os.makedirs(WORK_DIR, exist_ok=True)
with open(wheel, "wb") as f:
    f.write(buf.getvalue())
target = os.environ.get("ORCH_NOTEBOOK_PIP_TARGET")  # tests: keep the kernel's env clean
cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall",
       wheel] + (["--target", target] if target else [])
subprocess.run(cmd, check=True)
if target:
    sys.path.insert(0, target)
import orchestrator
print("orch", orchestrator.__version__, "installed")'''

RUN = '''\
# Run the worker until it has been idle for IDLE_MINUTES (or, with JOB, that job).
from pathlib import Path
from orchestrator.hubs.drive import DriveHub
from orchestrator.worker import Worker, WorkerConfig
gpu_name = None
try:
    names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                           capture_output=True, text=True).stdout.split("\\n")
    gpu_name = names[0].strip() or None
except FileNotFoundError:
    pass
hub = DriveHub(HUB_FOLDER, credentials=CREDS, staleness=2.0)
config = WorkerConfig(
    hub="drive:" + HUB_FOLDER, name=WORKER_NAME, kind="colab", work_dir=Path(WORK_DIR),
    idle_timeout=IDLE_MINUTES * 60, heartbeat_interval=HEARTBEAT_SECONDS, poll_interval=2.0,
    check_interval=5.0, log_interval=10.0, gpu="0" if gpu_name else None, gpu_name=gpu_name,
    session_hours=SESSION_HOURS, only_job=JOB)
worker = Worker(config, hub=hub)
print(f"worker {worker.id} on {hub.url}: waiting for jobs (Ctrl-M I to stop)")
ran = worker.run()
print(f"worker {worker.id} finished: {ran} job(s) run")'''


def notebook(hub_folder: str, wheel_name: str, wheel_sha: str, job: str | None = None,
             idle_minutes: float = 30.0, session_hours: float = 12.0,
             work_dir: str = "/content/orch-work", worker_name: str = "colab",
             heartbeat: float = 5.0) -> Any:
    """The worker notebook (or, with ``job``, the per-job notebook), as nbformat v4."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    what = f"runs job `{job}`, then stops" if job else \
        f"runs every job sent to Colab until it has been idle for {idle_minutes:g} minutes"
    settings = "\n".join([
        "# orch settings, written by `orch colab`",
        f"HUB_FOLDER = {hub_folder!r}",
        f"WHEEL_NAME = {wheel_name!r}",
        f"WHEEL_SHA = {wheel_sha!r}",
        f"JOB = {job!r}",
        f"IDLE_MINUTES = {idle_minutes!r}",
        f"SESSION_HOURS = {session_hours!r}",
        f"WORK_DIR = {work_dir!r}",
        f"WORKER_NAME = {worker_name!r}",
        f"HEARTBEAT_SECONDS = {heartbeat!r}",
    ])
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            f"# orch worker\n\nThis notebook {what}, for the orch project whose hub is the "
            f"Drive folder `{hub_folder}`. Choose *Runtime → Change runtime type → GPU*, then "
            "*Runtime → Run all*. Models come back to the project by themselves; if the "
            "runtime disconnects, the job resumes from its last checkpoint on the next run."),
        nbformat.v4.new_code_cell(settings),
        nbformat.v4.new_code_cell(SIGN_IN),
        nbformat.v4.new_code_cell(GPU),
        nbformat.v4.new_code_cell(INSTALL),
        nbformat.v4.new_code_cell(RUN),
    ]
    nb.metadata.update({
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
        "colab": {"provenance": [], "gpuType": "T4"},
    })
    nbformat.validate(nb)
    return nb


def notebook_key(job: str | None) -> str:
    return f"{NOTEBOOKS}/{'job-' + job if job else 'worker'}.ipynb"
