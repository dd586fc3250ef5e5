"""RayLink: orch's one way to talk to a Ray cluster, through Ray's job submission
API (``ray.job_submission.JobSubmissionClient``, imported on first use: the CLI never
imports ray at start-up).

Every call has a deadline (Ray's client has none: a head that stops answering would
hold the daemon's tick) and every failure is a :class:`ClusterError` of one line.
orch workers are Ray jobs whose submission id is the worker's id, tagged with the
project's id in their metadata, so the place finds its own jobs among everyone's.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import NotConfiguredError, OrchError

if TYPE_CHECKING:
    from .clusters import Cluster

log = logging.getLogger(__name__)
TIMEOUT = 30.0  # seconds for one request to the cluster's head
_RAY_LOG = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+\s+(DEBUG|INFO|WARNING) ")
ENDED = ("SUCCEEDED", "FAILED", "STOPPED")


class ClusterError(OrchError):
    """The cluster cannot be reached, or refused what was asked (one line)."""


@dataclass(frozen=True)
class RayJob:
    """One orch worker as Ray sees it."""

    id: str  # the submission id: the worker's id
    status: str  # PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED
    message: str  # Ray's words for how it ended (one line)


@dataclass(frozen=True)
class Resources:
    ray_version: str
    cpus: float
    cpus_free: float
    gpus: float
    gpus_free: float
    nodes: int


def need_ray() -> Any:
    """The ray.job_submission module, or one line saying how to install it."""
    try:
        from ray import job_submission
    except ImportError:
        raise NotConfiguredError("Ray clusters need ray on this machine: pip install "
                                 "'orch[ray]'") from None
    return job_submission


def brief(message: str | None) -> str:
    """Ray's account of a job's end, in one line (its node died, it was stopped…)."""
    text = (message or "").strip()
    if "node has died" in text or "node was terminated" in text:
        return "its Ray node died"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "no reason given"
    first = lines[0].partition(", last available logs")[0].rstrip(":")
    if "last available logs" not in lines[0]:
        return first[:300]
    said = [ln for ln in lines[1:]  # the entrypoint's own words, not Ray's about it
            if not ln.startswith("Running entrypoint for job") and not _RAY_LOG.match(ln)]
    return f"{first}: {said[-1]}"[:300] if said else first[:300]


class RayLink:
    """Talks to one cluster's head. Cheap to build; connects on first use."""

    def __init__(self, cluster: Cluster, timeout: float = TIMEOUT) -> None:
        self.cluster = cluster
        self.timeout = timeout
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            module = need_ray()
            timeout = self.timeout
            # its client logs each package upload at INFO into the daemon's log
            logging.getLogger("ray.dashboard.modules.dashboard_sdk").setLevel(logging.WARNING)

            class Client(module.JobSubmissionClient):  # type: ignore[misc, name-defined]
                def _do_request(self, *args: Any, **kw: Any) -> Any:
                    kw.setdefault("timeout", timeout)
                    return super()._do_request(*args, **kw)

            self._client = self._call("connecting", lambda: Client(self.cluster.address))
        return self._client

    def _call(self, doing: str, fn: Any) -> Any:
        try:
            return fn()
        except OrchError:
            raise
        except Exception as exc:  # noqa: BLE001 - requests', ray's and pydantic's errors
            raise ClusterError(f"cluster {self.cluster.name} ({self.cluster.address}): "
                               f"{doing} failed: {_reason(exc)}") from None

    def resources(self) -> Resources:
        """The cluster's Ray version, CPUs and GPUs (total and free), and nodes."""
        import requests

        def get() -> Resources:
            base = self.cluster.address
            version = requests.get(f"{base}/api/version", timeout=self.timeout)
            version.raise_for_status()
            status = requests.get(f"{base}/api/cluster_status", timeout=self.timeout)
            status.raise_for_status()
            report = status.json()["data"]["clusterStatus"]["loadMetricsReport"]
            usage = report.get("usage") or {}
            cpu_used, cpus = usage.get("CPU", [0.0, 0.0])
            gpu_used, gpus = usage.get("GPU", [0.0, 0.0])
            nodes = len(report.get("usageByNode") or {})
            return Resources(version.json()["ray_version"], cpus, cpus - cpu_used, gpus,
                             gpus - gpu_used, nodes)

        return self._call("checking", get)  # type: ignore[no-any-return]

    def submit(self, worker_id: str, entrypoint: str, runtime_env: dict[str, Any],
               cpus: float, gpus: float, project_id: str) -> None:
        """Start one worker as a Ray job named ``worker_id``."""
        self._call("starting a worker", lambda: self.client.submit_job(
            entrypoint=entrypoint, submission_id=worker_id, runtime_env=runtime_env,
            entrypoint_num_cpus=cpus, entrypoint_num_gpus=gpus,
            metadata={"orch_project": project_id, "orch_worker": worker_id}))

    def jobs(self, project_id: str) -> dict[str, RayJob]:
        """This project's worker jobs, by worker id."""
        found = self._call("listing jobs", lambda: self.client.list_jobs())
        out = {}
        for job in found:
            if (job.metadata or {}).get("orch_project") == project_id and job.submission_id:
                out[job.submission_id] = RayJob(job.submission_id, str(job.status.value),
                                                brief(job.message))
        return out

    def stop(self, worker_id: str) -> bool:
        """Stop a worker's Ray job (SIGTERM, then SIGKILL after Ray's grace). Whether
        it was still running."""
        return bool(self._call("stopping a worker",
                               lambda: self.client.stop_job(worker_id)))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    name = type(exc).__name__
    if "ConnectionError" in name or "Connection refused" in str(exc):
        return "cannot connect (is Ray running there, and its dashboard reachable?)"
    if "Timeout" in name:
        return "no answer (timed out)"
    return f"{name}: {text[0][:200] if text else ''}"
