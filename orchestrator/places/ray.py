"""Ray clusters as places: one place per cluster of `orch clusters add`.

The place starts orch workers as Ray jobs (:class:`~orchestrator.raylink.RayLink`):
the entrypoint runs the same worker program as everywhere else, from the same orch
wheel Colab uses (Ray's runtime environment carries it: ``py_modules``), sized with
``entrypoint_num_cpus`` / ``entrypoint_num_gpus``. The workers use the cluster's hub,
a folder every node sees at one path: shared with this machine too (the daemon serves
it under the place's name, ``ray:NAME``) or an SSH host's (served by that host's
place, over SFTP). So every guarantee holds as elsewhere: one
attempt at a time, leases, resume from checkpoints, models pulled back.

What Ray knows, the place reads (one list request at most every few seconds, never
from the tick's hot path otherwise): a worker whose Ray job failed or was stopped
(its node died, someone stopped it) is gone at once with Ray's reason, and its job
is re-queued; a worker that lost its lease has its Ray job stopped (``kill``), which
is how `orch cancel` reaches a worker that no longer answers. Workers exit by
themselves after ``worker_idle_timeout`` idle, which frees the cluster when the
queue is empty. A cluster that cannot be reached is logged once, its jobs wait, and
it is tried again every ``host_retry`` seconds.
"""

from __future__ import annotations

import secrets
import shlex
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..clusters import STARTUP, Cluster, Clusters, ClusterStatus
from ..config import Project, Settings
from ..errors import OrchError
from ..logs import get_logger
from ..models import WorkerInfo
from ..raylink import ENDED, RayJob, RayLink
from . import Availability, Place

if TYPE_CHECKING:
    from ..hubs.base import Hub
    from ..identity import Identity
    from ..placement import Server
    from . import Placeable

log = get_logger(__name__)
REFRESH = 3.0  # seconds between listings of the cluster's jobs
PENDING_LIMIT = 300.0  # a worker Ray has not started by then is stopped (no resources)
GIVE_UP = 3  # workers in a row that ended before joining: the cluster has a problem


class RayPlace(Place):
    """One Ray cluster: its hub (a shared folder, or an SSH host's), its workers (Ray
    jobs)."""

    def __init__(self, project: Project, cluster: Cluster) -> None:
        self.project = project
        self.cluster = cluster
        self.config = cluster
        self.name = f"ray:{cluster.name}"
        self.clusters = Clusters(project.state_dir)
        self.link = RayLink(cluster)
        self._hub: Hub | None = None
        self.tried = -1e18  # when Ray's head was last checked
        self.problem = ""
        self.listed = -1e18  # when the cluster's jobs were last listed
        self.ray_jobs: dict[str, RayJob] = {}
        self.started: dict[str, float] = {}  # worker id → when it was asked for
        self.never_joined = 0  # workers in a row that ended before joining
        self.wanted: list[bool] = []  # prospective workers the plan chose (gpu or not)
        self._runtime_env: dict[str, object] | None = None
        self._identity: Identity | None = None
        # a shared folder is this place's own hub; an SSH host's is served by its place
        self.brings_hub = cluster.via_host is None
        self.hub_name = self.name if self.brings_hub else cluster.hub  # its workers' hub
        self.key_ready = False  # the key is on the SSH host (ssh: hubs)

    @property
    def identity(self) -> Identity:
        """The project's id and key (read once: they never change)."""
        if self._identity is None:
            from ..identity import load_identity

            self._identity = load_identity(self.project.state_dir)
        return self._identity

    # ---- the hub ------------------------------------------------------------------

    def connect_hub(self, now: float) -> Hub | None:
        """The cluster's folder hub (with the project's key beside it for the workers).
        It stays connected while Ray's head is away: workers already running go on
        and their results come back; only new workers wait for the head."""
        if self._hub is None:
            from ..hubs.folder import FolderHub

            try:
                write_key(self.cluster, self.identity.key)
            except OrchError as exc:
                self._set_problem(str(exc))
                return None
            self._hub = FolderHub(self.cluster.hub_path)
            self.reachable(now)
        return self._hub

    def ready(self) -> bool:
        """Whether the workers' hub can be used: the shared folder is set up, or the
        SSH host was probed and has no problem."""
        if self.cluster.via_host is None:
            return self._hub is not None
        from ..hosts import Hosts

        status = Hosts(self.project.state_dir).status(self.cluster.via_host)
        return status is not None and bool(status.home) and not status.problem

    def paths(self) -> tuple[str, str]:
        """(the hub folder, the key file) as the cluster's nodes see them."""
        host = self.cluster.via_host
        if host is None:
            return str(self.cluster.hub_path), str(self.cluster.key_path)
        from ..hosts import Hosts

        status = Hosts(self.project.state_dir).status(host)
        home = status.home if status else ""
        return f"{home}/hub", f"{home}/secret/key"

    def _install_key(self) -> None:
        """For an SSH host's hub: orch and the project's key on the host (once)."""
        host_name = self.cluster.via_host
        if host_name is None or self.key_ready:
            return
        from ..hosts import Hosts
        from ..ssh import HostLink
        from .ssh_setup import install

        hosts = Hosts(self.project.state_dir)
        link = HostLink(hosts.get(host_name), hosts.known_hosts)
        try:
            install(link, self.paths()[0].removesuffix("/hub"), self.identity.key)
        finally:
            link.close()
        self.key_ready = True

    def reachable(self, now: float) -> bool:
        """Whether Ray's head answers. Checked (with its free CPUs and GPUs) every
        ``host_retry`` seconds; a problem is said once, and kept for `orch clusters
        list` and `orch submit`."""
        if now - self.tried >= self.project.settings.host_retry:
            self.tried = now
            try:
                self.check()
            except OrchError as exc:
                self._set_problem(str(exc))
        return not self.problem

    def check(self) -> ClusterStatus:
        """Reach the cluster and save what was found (its Ray version, CPUs, GPUs).
        ClusterError (one line) when it cannot be reached."""
        res = self.link.resources()
        status = ClusterStatus(name=self.cluster.name, checked_at=time.time(),
                               ray_version=res.ray_version, cpus=res.cpus,
                               cpus_free=res.cpus_free, gpus=res.gpus,
                               gpus_free=res.gpus_free, nodes=res.nodes)
        self.clusters.save_status(status)
        self._set_problem("")
        return status

    def _set_problem(self, problem: str) -> None:
        if problem and problem != self.problem:
            log.error("%s; its jobs wait (tried again every %.0f s)", problem,
                      self.project.settings.host_retry)
        elif not problem and self.problem:
            log.info("cluster %s is back", self.cluster.name)
        self.problem = problem
        self.clusters.note_problem(self.cluster.name, problem)

    def status(self) -> ClusterStatus | None:
        return self.clusters.status(self.cluster.name)

    # ---- what Ray says --------------------------------------------------------------

    def refresh(self, now: float) -> None:
        """List this project's worker jobs on the cluster (at most every REFRESH s)."""
        if now - self.listed < REFRESH or self.problem or not self.ready():
            return
        self.listed = now
        try:
            self.ray_jobs = self.link.jobs(self.identity.project_id)
        except OrchError as exc:
            self._set_problem(str(exc))

    def ended(self, worker: WorkerInfo) -> str | None:
        """Ray's reason when the worker's Ray job has ended (failed, stopped)."""
        self.refresh(time.time())
        job = self.ray_jobs.get(worker.id)
        if job is None or job.status not in ENDED:
            return None
        if job.status == "SUCCEEDED":
            return "worker exited"
        return f"Ray job {job.id} {job.status.lower()}: {job.message}"

    # ---- placement ----------------------------------------------------------------

    def owns(self, worker: WorkerInfo) -> bool:
        return (worker.kind == "ray" and worker.name == self.cluster.name
                and worker.hub == self.hub_name)

    def can_run(self, job: Placeable) -> bool:
        return job.target in ("auto", "remote", self.name)

    def how_soon(self, job: Placeable, workers: Sequence[WorkerInfo]) -> Availability:
        status = self.status()
        return self.daemon_starts(job, workers, status.problem if status else "",
                                  status.gpus > 0 if status else None,
                                  status.startup if status else STARTUP,
                                  f"Ray cluster {self.cluster.name}")

    def _live(self, workers: Sequence[WorkerInfo], now: float) -> int:
        """Workers up or starting: live ones, and ones asked for that have not joined
        (``started`` holds only those: a start is forgotten once it joined)."""
        joined = {w.id for w in workers if self.owns(w)}
        live = sum(1 for w in workers if self.owns(w) and not w.gone and w.state != "stopped")
        return live + sum(1 for wid in self.started if wid not in joined)

    def prospects(self, workers: Sequence[WorkerInfo], now: float) -> list[Server]:
        """Workers the cluster could still start (up to ``max_workers``; GPU ones while
        it has free GPUs), ready after the learned start-up time."""
        from ..estimates import device_of
        from ..placement import Server

        status = self.status()
        if not self.ready() or self.problem or status is None:
            return []
        room = self.cluster.max_workers - self._live(workers, now)
        out = []
        for i in range(max(room, 0)):
            gpu = i < int(status.gpus_free)
            worker = WorkerInfo(id=f"{self.cluster.name}-{'gpu' if gpu else 'cpu'}{i} (to start)",
                                name=self.cluster.name, kind="ray", host=self.cluster.address,
                                pid=None, gpu=gpu, gpu_name=None, state="idle", job_id=None,
                                attempt=None, last_seen=now, gone=False, hub=self.hub_name)
            out.append(Server(key=worker.id, place=self.name, worker=worker, live=False,
                              device=device_of("ray", gpu, None), ready_in=status.startup,
                              startup=status.startup, remote=True))
        return out

    def want(self, servers: Sequence[str]) -> None:
        """The prospects the plan chose: a GPU worker for each ``NAME-gpuI``."""
        self.wanted = [s.startswith(f"{self.cluster.name}-gpu") for s in servers]

    # ---- workers ------------------------------------------------------------------

    def start_workers(self, waiting: Mapping[str, int], workers: Sequence[WorkerInfo]) -> None:
        """Start the workers the plan wants (when jobs wait ``--on`` this cluster, one
        per job up to ``max_workers``: on free GPUs first, the rest on CPUs); forget
        starts that joined (learning the start-up time) or that Ray never ran."""
        now = time.time()
        if not self.ready() or not self.reachable(now):
            return
        self.refresh(now)
        self._settle_starts(workers, now)
        if self.problem:
            return
        want = list(self.wanted)
        if self.name in waiting:  # a worker per job waiting here, less those starting
            status = self.status()
            n = max(waiting[self.name] - len(self.started), 0)
            gpus = min(int(status.gpus_free) if status else 0, n)
            want = [True] * gpus + [False] * (n - gpus)
        room = self.cluster.max_workers - self._live(workers, now)
        self.wanted = []
        for gpu in want[:max(room, 0)]:
            try:
                self.spawn(gpu)
            except OrchError as exc:
                self._set_problem(str(exc))
                return

    def _settle_starts(self, workers: Sequence[WorkerInfo], now: float) -> None:
        joined = {w.id: w for w in workers if self.owns(w)}
        for wid, at in list(self.started.items()):
            job = self.ray_jobs.get(wid)
            if wid in joined:
                del self.started[wid]
                self.never_joined = 0
                self.clusters.learn_startup(self.cluster.name, joined[wid].last_seen - at)
            elif job is not None and job.status in ENDED:
                del self.started[wid]
                self.never_joined += 1
                if self.never_joined >= GIVE_UP:  # say it once, as the cluster's problem
                    self.never_joined = 0
                    self._set_problem(f"cluster {self.cluster.name}: the workers started "
                                      f"there end before joining ({job.message})")
            elif now - at > PENDING_LIMIT:
                del self.started[wid]
                log.warning("worker %s on cluster %s did not start in %.0f s (too few free "
                            "resources?); stopping it", wid, self.cluster.name, PENDING_LIMIT)
                self._stop(wid)

    def spawn(self, gpu: bool) -> str:
        """Ask Ray for one worker; returns its id (the Ray job's submission id)."""
        wid = f"{self.cluster.name}-ray-{secrets.token_hex(3)}"
        self._install_key()
        hub, key = self.paths()
        command = worker_command(self.cluster, hub, key, wid, gpu, self.project.settings,
                                 self.identity.project_id)
        self.link.submit(wid, command, self.runtime_env(), cpus=1.0, gpus=1.0 if gpu else 0.0,
                         project_id=self.identity.project_id)
        self.started[wid] = time.time()
        log.info("started worker %s on Ray cluster %s (Ray job %s)", wid, self.cluster.name,
                 wid)
        return wid

    def runtime_env(self) -> dict[str, object]:
        """This orch's wheel (the one Colab installs), for Ray to install on the node.
        Ray keeps a wheel by its file name, so the name carries the content's sha256 (a
        wheel build tag): changed code is never mistaken for what a node has cached.
        Kept in ``.orch/ray/``, the older ones removed."""
        if self._runtime_env is None:
            import hashlib

            from ..atomic import write_atomic
            from .colab_notebook import build_wheel

            name, wheel = build_wheel()
            dist, _, tags = name.partition("-py3")  # orch-VERSION, -none-any.whl
            named = f"{dist}-0{hashlib.sha256(wheel).hexdigest()[:16]}-py3{tags}"
            folder = self.project.state_dir / "ray"
            folder.mkdir(mode=0o700, exist_ok=True)
            for old in folder.glob("*.whl"):
                if old.name != named:
                    old.unlink(missing_ok=True)
            path = folder / named
            if not path.exists():
                write_atomic(path, wheel)
            self._runtime_env = {"py_modules": [str(path)]}
        return self._runtime_env

    def kill(self, worker: WorkerInfo, run_pids: Sequence[int]) -> list[str]:
        """A worker that lost its lease (hung, or out of reach): stop its Ray job."""
        job = self.ray_jobs.get(worker.id)
        if not self.ready() or (job is not None and job.status in ENDED):
            return []
        return [f"stopped Ray job {worker.id} on cluster {self.cluster.name}"] \
            if self._stop(worker.id) else []

    def _stop(self, wid: str) -> bool:
        try:
            return self.link.stop(wid)
        except OrchError as exc:
            log.info("could not stop Ray job %s: %s", wid, exc)
            return False


def write_key(cluster: Cluster, key: str) -> None:
    """The project's key beside the cluster's hub (0600), for its workers. Idempotent."""
    from ..atomic import write_atomic
    from ..errors import UsageError

    path = cluster.key_path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cluster.hub_path.mkdir(exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8").strip() != key:
            write_atomic(path, key, mode=0o600)
    except OSError as exc:
        raise UsageError(f"cluster {cluster.name}: cannot use its hub folder "
                         f"{cluster.hub_path}: {exc.strerror or exc}") from None


def worker_command(cluster: Cluster, hub: str, key: str, wid: str, gpu: bool,
                   settings: Settings, project_id: str) -> str:
    """The Ray job's entrypoint: the worker program, on the cluster's Python, with the
    hub folder and the key file as the nodes see them. A GPU worker uses the GPU Ray
    gave its job. Each worker's scratch is a folder of its own in the project's work
    folder on the node (removed when it exits); the blob cache beside them is shared."""
    args = ["-m", "orchestrator.worker", "--hub", hub, "--kind", "ray",
            "--name", cluster.name, "--id", wid, "--key-file", key,
            "--idle-timeout", str(settings.worker_idle_timeout),
            "--heartbeat", str(settings.heartbeat_interval)]
    work = f'--work-dir "${{TMPDIR:-/tmp}}/orch-ray/{project_id}"'
    gpu_args = ' --gpu "${CUDA_VISIBLE_DEVICES%%,*}"' if gpu else ""
    return f"{shlex.quote(cluster.python)} {shlex.join(args)} {work}{gpu_args}"
