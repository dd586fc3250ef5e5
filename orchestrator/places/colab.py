"""The Colab place: workers on the project's Drive hub, started by a person who
opens the notebook (or by Google's colab CLI, :mod:`.colab_launch`); generic
remote workers (``orch worker --hub drive:…`` on another machine) count too.

``publish`` puts the worker (or per-job) notebook on the hub, with the exact orch
wheel it installs stored beside it as a blob, and returns the Colab link.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import Project
from ..errors import NotConfiguredError
from ..models import WorkerInfo
from . import Availability, Place

if TYPE_CHECKING:
    from . import Placeable
    from .colab_notebook import NotebookSettings

COLAB_URL = "https://colab.research.google.com/drive/{file_id}"
TARGETS = ("colab", "remote", "auto")


class ColabPlace(Place):
    """Workers on the project's remote (Drive) hub: Colab notebooks and others."""

    name = "colab"

    def __init__(self, project: Project) -> None:
        self.project = project

    def owns(self, worker: WorkerInfo) -> bool:
        return worker.hub != "local"

    def can_run(self, job: Placeable) -> bool:
        return bool(self.project.settings.hub) and job.target in TARGETS

    def how_soon(self, job: Placeable, workers: Sequence[WorkerInfo]) -> Availability:
        now = self.fitting(job, workers)
        if now is not None:
            return now
        who = "Colab" if job.target == "colab" else "remote"
        return Availability(self.name, None, f"no {who} worker is running: start one with "
                                             "`orch colab` and open the link it prints "
                                             "(Runtime → Run all)")


@dataclass(frozen=True)
class Published:
    """A notebook put on the hub: its Colab link, where it is on the hub, and the
    settings it was rendered with (its HUB_KEY is empty: the key never enters a hub)."""

    url: str
    where: str
    settings: NotebookSettings


def publish(project: Project, job_id: str | None, idle_minutes: float,
            session_hours: float) -> Published:
    """Store this orch's wheel (once per content) and the notebook on the project's
    Drive hub; the notebook's settings name the wheel by its sha256."""
    import hashlib

    from .. import protocol as P
    from ..hubs import claim_hub, project_hub
    from ..identity import load_identity
    from .colab_notebook import NotebookSettings, build_wheel, render

    if not project.settings.hub:
        raise NotConfiguredError('orch colab needs a Drive hub: set hub = "drive" in the '
                                 "project's settings and run `orch auth`")
    hub = project_hub(project, "remote")
    claim_hub(hub, load_identity(project.state_dir).project_id)
    wheel_name, wheel = build_wheel()
    sha = hashlib.sha256(wheel).hexdigest()
    if not hub.exists(P.blob(sha)):
        hub.put_bytes(P.blob(sha), wheel)
    settings = NotebookSettings(hub_folder=project.remote_hub_url.partition(":")[2],
                                wheel_name=wheel_name, wheel_sha=sha, job=job_id,
                                idle_minutes=idle_minutes, session_hours=session_hours)
    key = P.notebook(f"job-{job_id}" if job_id else "worker")
    hub.put_bytes(key, render(settings).encode())
    file_id = hub.file_id(key)  # type: ignore[attr-defined]
    return Published(url=COLAB_URL.format(file_id=file_id), where=f"{hub.url}/{key}",
                     settings=settings)
