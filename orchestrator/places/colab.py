"""The Colab place: workers on the project's Drive hub, started by a person who
opens the notebook (or by Google's colab CLI, :mod:`.colab_launch`); generic
remote workers (``orch worker --hub drive:…`` on another machine) count too.

``publish`` puts the worker (or per-job) notebook on the hub, with the exact orch
wheel it installs stored beside it as a blob, and returns the Colab link.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import Project
from ..errors import NotConfiguredError, OrchError
from ..logs import get_logger
from ..models import WorkerInfo
from . import Availability, Place

if TYPE_CHECKING:
    from ..placement import Server
    from . import Placeable
    from .colab_notebook import NotebookSettings

log = get_logger(__name__)
COLAB_URL = "https://colab.research.google.com/drive/{file_id}"
TARGETS = ("colab", "remote", "auto")
SESSION = 12 * 3600.0  # a Colab session's cap
BACKOFF = 900.0  # seconds without launches after one failed or never joined


class ColabPlace(Place):
    """Workers on the project's remote (Drive) hub: Colab notebooks and others."""

    name = "colab"

    def __init__(self, project: Project) -> None:
        self.project = project
        self.pending: list[float] = []  # when each session orch launched (not joined yet)
        self.wanted = 0
        self.paused_until = 0.0  # no launches before this (after a failure)

    # ---- sessions orch launches itself (`colab_workers`) ---------------------------

    def _live(self, workers: Sequence[WorkerInfo]) -> int:
        return sum(1 for w in workers if self.owns(w) and w.kind == "colab" and not w.gone
                   and w.state != "stopped")

    def _room(self, workers: Sequence[WorkerInfo], now: float) -> int:
        """Sessions orch may still launch: none for a while (BACKOFF) after a launch
        failed or a session never joined (3 start-ups on: it is given up), so the
        plan stops waiting for sessions that do not come. A launched session that
        joined is a live worker now."""
        s = self.project.settings
        room = (s.colab_workers or 0) - self._live(workers)
        if any(now - t >= 3 * s.colab_startup for t in self.pending):
            self._pause(now, "a launched Colab session never joined")
        self.pending = [t for t in self.pending if now - t < 3 * s.colab_startup]
        self.pending = self.pending[:max(0, room)]
        return 0 if now < self.paused_until else max(0, room)

    def _pause(self, now: float, why: str) -> None:
        self.paused_until = now + BACKOFF
        log.warning("%s; no Colab sessions are launched for the next %.0f minutes (jobs "
                    "are placed elsewhere meanwhile)", why, BACKOFF / 60)

    def prospects(self, workers: Sequence[WorkerInfo], now: float) -> list[Server]:
        """With ``colab_workers`` set, the sessions orch may still launch (and those
        launched that have not joined yet): ready after ``colab_startup``."""
        from ..estimates import device_of
        from ..placement import Server

        s = self.project.settings
        out = []
        for i in range(self._room(workers, now)):
            started = self.pending[i] if i < len(self.pending) else now
            worker = WorkerInfo(id=f"colab-{i + 1} (to start)", name="colab", kind="colab",
                                host="colab", pid=None, gpu=True, gpu_name=s.colab_gpu,
                                state="idle", job_id=None, attempt=None, last_seen=now,
                                gone=False, hub="remote")
            startup = max(0.0, s.colab_startup - (now - started))
            out.append(Server(key=worker.id, place=self.name, worker=worker, live=False,
                              device=device_of("colab", True, s.colab_gpu), ready_in=startup,
                              startup=startup, remote=True, ends_in=startup + SESSION))
        return out

    def want(self, servers: Sequence[str]) -> None:
        self.wanted = len(set(servers))

    def start_workers(self, waiting: Mapping[str, int], workers: Sequence[WorkerInfo]) -> None:
        """Launch the sessions the plan wants that are not launched yet, within
        ``colab_workers``."""
        import time

        now = time.time()
        need = min(self.wanted, self._room(workers, now)) - len(self.pending)
        for _ in range(max(0, need)):
            try:
                name = self.launch()
            except OrchError as exc:
                self._pause(now, f"cannot launch a Colab session: {exc}")
                self.wanted = 0
                return
            log.info("launched Colab session %s for the queue", name)
            self.pending.append(now)

    def launch(self) -> str:
        """Start one Colab session running the worker notebook; its name."""
        return launch_session(self.project, self.project.settings.colab_gpu)

    def owns(self, worker: WorkerInfo) -> bool:
        return worker.hub == "remote"

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
                                shared_drive=project.settings.drive_shared_drive or "",
                                wheel_name=wheel_name, wheel_sha=sha, job=job_id,
                                idle_minutes=idle_minutes, session_hours=session_hours)
    key = P.notebook(f"job-{job_id}" if job_id else "worker")
    hub.put_bytes(key, render(settings).encode())
    file_id = hub.file_id(key)  # type: ignore[attr-defined]
    return Published(url=COLAB_URL.format(file_id=file_id), where=f"{hub.url}/{key}",
                     settings=settings)


def launch_session(project: Project, gpu: str | None, published: Published | None = None
                   ) -> str:
    """Start a Colab session running the worker notebook (``published``, else it is
    published now) through Google's `colab` CLI (:mod:`.colab_launch`). The launched
    copy stays on this machine and carries the project's key and orch's Drive sign-in
    (the CLI cannot ask for Drive consent); the one on the hub never does. Returns the
    session's name."""
    import dataclasses
    import secrets

    from ..atomic import write_atomic
    from ..identity import load_identity
    from .colab_launch import check_cli, drive_sign_in, launch
    from .colab_notebook import render

    cli = check_cli(project.settings.colab_cli)  # before publishing: one line if it cannot
    sign_in = drive_sign_in(project.drive_credentials)
    published = published or publish(project, None, 30.0, SESSION / 3600)
    local = project.state_dir / "colab" / published.where.rpartition("/")[2]
    local.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(local, render(dataclasses.replace(
        published.settings, hub_key=load_identity(project.state_dir).key,
        drive_credentials=sign_in)), mode=0o600)
    return launch(local, f"orch-{project.root.name}-{secrets.token_hex(3)}", gpu,
                  project.logs_dir / "colab-launch.log", cli,
                  published.settings.session_hours)
