"""Places: where workers are started, and how.

A *hub* is how the daemon and workers talk (:mod:`orchestrator.hubs`); a *place*
is where workers run and who starts them: local slots (the daemon starts a worker
process per GPU or CPU slot), Colab notebooks (a person, or Google's colab CLI,
starts one), SSH hosts (:mod:`.ssh`; the daemon starts workers over SSH, and
the host's hub comes with the place: :meth:`Place.connect_hub`) and Ray clusters
(:mod:`.ray`; workers are Ray jobs, the hub a folder both sides share). Every place
runs the same
worker program; a place only answers the questions below.

The daemon asks each place to keep workers running while there is work
(:meth:`Place.start_workers`), to stop them at exit, and whether a worker's
process is alive. ``orch submit`` asks whether any place can run a job and how
soon, to warn when a job would wait for a worker nobody will start.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..clusters import CLUSTERS_FILE
from ..hosts import HOSTS_FILE
from ..models import GpuNeed, WorkerInfo

if TYPE_CHECKING:
    from ..config import Project
    from ..hubs.base import Hub
    from ..placement import Server

    class Placeable(Protocol):
        """What a place needs to know of a job (a stored Job or a JobSpec)."""

        @property
        def target(self) -> str: ...

        @property
        def gpu(self) -> GpuNeed: ...



@dataclass(frozen=True)
class Availability:
    """How soon a place could start a job: ``start_in`` seconds (0: a worker is free
    now), or None when no worker will come unless someone acts (``why`` says what)."""

    place: str
    start_in: float | None
    why: str


class Place(ABC):
    """One place to train. Implementations are cheap to build (no I/O at init)."""

    name: str
    config: object | None = None  # what a configured place was built from (a host…)

    @abstractmethod
    def owns(self, worker: WorkerInfo) -> bool:
        """Whether ``worker`` is one of this place's."""

    @abstractmethod
    def can_run(self, job: Placeable) -> bool:
        """Whether a worker of this place could ever take ``job`` (its ``--on``),
        whatever is running now; :meth:`how_soon` says whether one will."""

    @abstractmethod
    def how_soon(self, job: Placeable, workers: Sequence[WorkerInfo]) -> Availability:
        """How soon a worker of this place could start ``job``, given the live
        ``workers`` the daemon knows."""

    def fitting(self, job: Placeable, workers: Sequence[WorkerInfo]) -> Availability | None:
        """When one of this place's live ``workers`` could take ``job``: at once if
        one is free, else once one is done (how long: issue 7's placement); None
        when this place has no such worker."""
        mine = [w for w in workers if self.owns(w) and not w.gone
                and target_allows(job.target, w) and gpu_allows(job, w)]
        if any(w.job_id is None for w in mine):
            return Availability(self.name, 0.0, f"a {self.name} worker is free")
        if mine:
            return Availability(self.name, 1.0, f"{self.name} workers are busy")
        return None

    def daemon_starts(self, job: Placeable, workers: Sequence[WorkerInfo], problem: str,
                      gpus: bool | None, startup: float, where: str) -> Availability:
        """:meth:`how_soon` for a place whose workers the daemon starts (an SSH host, a
        Ray cluster, ``where``): a live worker that fits; else none while the place has
        a ``problem`` or a ``--gpu`` job meets no GPU (``gpus`` False; None: not known
        yet); else a new worker after ``startup`` seconds."""
        now = self.fitting(job, workers)
        if now is not None:
            return now
        if problem:
            return Availability(self.name, None, problem)
        if job.gpu is GpuNeed.REQUIRED and gpus is False:
            return Availability(self.name, None, f"{where} has no GPU")
        return Availability(self.name, startup, f"the daemon starts a worker on {where}")

    def prospects(self, workers: Sequence[WorkerInfo], now: float) -> list[Server]:
        """Workers this place would start if the plan wants one (not live yet), as
        placement servers: ready after their start-up. Default: none."""
        return []

    def want(self, servers: Sequence[str]) -> None:
        """The plan chose these prospective servers of this place: start them (the next
        :meth:`start_workers` does). Default: nothing to start."""

    def start_workers(self, waiting: Mapping[str, int], workers: Sequence[WorkerInfo]) -> None:
        """Start the workers that queued jobs need, if this place starts its own;
        ``waiting`` holds the ``--on`` targets of the queued jobs (with how many wait
        for each), ``workers`` every worker the daemon knows, gone ones included.
        Idempotent: called every tick."""

    def stop_workers(self) -> None:
        """Ask the workers this place started to stop (busy ones finish first)."""

    def running(self) -> bool:
        """Whether a worker process this place started is still running (the daemon
        stays up while one is)."""
        return False

    def kill(self, worker: WorkerInfo, run_pids: Sequence[int]) -> list[str]:
        """``worker`` lost its lease: make sure nothing of it still runs here before
        its jobs are re-queued (``run_pids``: the process groups of its runs). Returns
        one line per process stopped. The default: nothing this place can reach."""
        return []

    def alive(self, worker: WorkerInfo) -> bool | None:
        """Is ``worker``'s process alive? None when this place cannot tell (the
        lease decides)."""
        return None

    def ended(self, worker: WorkerInfo) -> str | None:
        """Why ``worker``'s process has ended, when this place knows it has (its
        process died; Ray says its job failed); None while it lives or when this place
        cannot tell (the lease decides)."""
        return "worker process died" if self.alive(worker) is False else None

    brings_hub = False  # its workers use a hub of the place's own (connect_hub)

    def connect_hub(self, now: float) -> Hub | None:
        """The hub of this place's own, for a place whose workers bring one (an SSH
        host's folder, over SFTP): connected, or None while it cannot be reached.
        The daemon serves it under the place's name. Default: none (the place's
        workers use the project's local or remote hub)."""
        return None


def target_allows(target: str, worker: WorkerInfo) -> bool:
    """Whether a job's ``--on`` target lets ``worker`` run it."""
    if target == "auto":
        return True
    kind, sep, name = target.partition(":")
    if sep and kind in ("ssh", "ray"):
        return worker.kind == kind and worker.name == name
    if target == "remote":
        return worker.hub != "local"
    return worker.kind == target


def gpu_allows(job: Placeable, worker: WorkerInfo) -> bool:
    return job.gpu is not GpuNeed.REQUIRED or worker.gpu


CONFIG_FILES = (HOSTS_FILE, CLUSTERS_FILE)  # in .orch/: the configured places


def project_places(project: Project) -> list[Place]:
    """Every place this project can train in, local first."""
    from .local import LocalPlace

    places: list[Place] = [LocalPlace(project)]
    if project.settings.hub:
        from .colab import ColabPlace

        places.append(ColabPlace(project))
    return places + configured_places(project)


def configured_places(project: Project) -> list[Place]:
    """The places the user added: SSH hosts (`orch hosts add`) and Ray clusters
    (`orch clusters add`). Reads their files only when they exist."""
    places: list[Place] = []
    if (project.state_dir / CONFIG_FILES[0]).exists():
        from ..hosts import Hosts
        from .ssh import SshPlace

        places += [SshPlace(project, host) for host in Hosts(project.state_dir).all()]
    if (project.state_dir / CONFIG_FILES[1]).exists():
        from ..clusters import Clusters
        from .ray import RayPlace

        places += [RayPlace(project, c) for c in Clusters(project.state_dir).all()]
    return places


def unplaceable_warning(places: Sequence[Place], job: Placeable,
                        workers: Sequence[WorkerInfo]) -> str | None:
    """One line when no worker will start ``job`` unless the user acts; else None."""
    able = [p for p in places if p.can_run(job)]
    if not able:
        return (f"no place of this project can run a job --on {job.target}"
                + (" that needs a GPU" if job.gpu is GpuNeed.REQUIRED else ""))
    offers = [p.how_soon(job, workers) for p in able]
    if any(o.start_in is not None for o in offers):
        return None
    return "; ".join(o.why for o in offers)
