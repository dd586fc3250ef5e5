"""Ray clusters of a project: what `orch clusters add` records, and what was last
learned of each cluster.

Files, all under ``.orch/`` (private to the user, never in a snapshot):

- ``clusters.json``: the clusters, written only by `orch clusters add/remove`
  (atomic rewrite). No token or password is stored.
- ``cluster-status/NAME.json``: the last check of a cluster (its Ray version, CPUs
  and GPUs, the learned start-up time of a worker, or the one-line problem that
  stops it), written by whoever checked it last (`orch clusters check`, the daemon).

A cluster's workers talk to the daemon through a folder hub that every node sees
at one path, which the daemon reaches one of two ways:

- ``folder:/shared/path``: this machine mounts that folder too (NFS, sshfs…). The
  project's key is written beside it (``PATH.key``, 0600), never into the hub.
- ``ssh:HOST``: the hub of an SSH host of `orch hosts add` (typically the head node),
  which the daemon reads and writes over SFTP; the nodes see the host's folder
  (``WORKDIR/hub``) at the same path, through a filesystem the cluster shares. The
  key is the one orch installs on the host (``WORKDIR/secret/key``).

The key never goes through Ray.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .codec import decode, encode
from .errors import UsageError
from .registry import Registry

CLUSTERS_FILE = "clusters.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")
_ADDRESS = re.compile(r"^https?://[A-Za-z0-9_.:\[\]-]{1,253}(:\d{1,5})?/?$")
STARTUP = 10.0  # seconds from asking Ray for a worker to its first heartbeat, until learned


@dataclass(frozen=True)
class Cluster:
    """One Ray cluster: ``address`` is its job submission address (the dashboard,
    ``http://HEAD:8265``); ``hub`` the folder its workers and this machine share."""

    name: str
    address: str
    hub: str  # "folder:/absolute/path" or "ssh:HOST"
    python: str = "python"  # the cluster's Python that runs workers (on its PATH)
    max_workers: int = 4  # orch workers on the cluster at once

    @property
    def via_host(self) -> str | None:
        """The SSH host whose hub the cluster's workers use, if it is one."""
        kind, _, rest = self.hub.partition(":")
        return rest if kind == "ssh" else None

    @property
    def hub_path(self) -> Path:
        return Path(self.hub.partition(":")[2])

    @property
    def key_path(self) -> Path:
        """The project's key for the cluster's workers: beside the hub, not in it."""
        return self.hub_path.with_name(self.hub_path.name + ".key")


@dataclass(frozen=True)
class ClusterStatus:
    """What a check of a cluster found (``problem`` set: it takes no work now, and
    that line says why). ``startup`` is learned from the workers it started."""

    name: str
    checked_at: float
    ray_version: str = ""
    cpus: float = 0.0
    cpus_free: float = 0.0
    gpus: float = 0.0
    gpus_free: float = 0.0
    nodes: int = 0
    startup: float = STARTUP
    problem: str = ""

    def to_json(self) -> str:
        return json.dumps(encode(self), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: Any) -> ClusterStatus:
        return decode(cls, raw, "cluster status")  # type: ignore[no-any-return]


def check_name(name: str) -> str:
    """A cluster name as `--on ray:NAME` uses it (lower case: targets are)."""
    if not _NAME.match(name):
        raise UsageError(f"bad cluster name {name!r}: lower-case letters, digits, '.', '_', "
                         "'-' (up to 40), starting with a letter or digit")
    return name


def check_address(address: str) -> str:
    """Ray's job submission address: ``http://HEAD:8265`` (https for a proxy)."""
    text = address.strip()
    if not _ADDRESS.match(text):
        raise UsageError(f"bad cluster address {address!r}: use Ray's job submission "
                         "address, e.g. http://HEAD:8265 (through an SSH tunnel: "
                         "http://127.0.0.1:8265)")
    return text.rstrip("/")


def parse_hub(text: str) -> str:
    """``folder:/absolute/path`` (a folder this machine and every node of the cluster
    see at that path) or ``ssh:HOST`` (an SSH host's hub, which the nodes see). Other
    hubs are refused with the reason."""
    kind, sep, rest = text.strip().partition(":")
    if kind == "folder" and sep and rest.startswith("/"):
        return f"folder:{Path(rest)}"
    if kind == "ssh" and sep and rest:
        from .hosts import check_name as check_host

        return f"ssh:{check_host(rest.lower())}"
    if kind == "drive":
        raise UsageError("--hub drive: Ray workers would need your Google sign-in on every "
                         "node, and orch never sends it: use a shared folder "
                         "(--hub folder:/path mounted on this machine and the nodes)")
    raise UsageError(f"bad --hub {text!r}: use folder:/absolute/path (a folder this machine "
                     "and every Ray node mount at that same path) or ssh:HOST (an SSH host's "
                     "hub, seen by the nodes)")


class Clusters(Registry[Cluster, ClusterStatus]):
    """The clusters of a project (``.orch/clusters.json``) and their last checks
    (``cluster-status/``). Cheap to build; reads on use."""

    FILE = CLUSTERS_FILE
    KEY = "clusters"
    STATUS_DIR = "cluster-status"
    NOUN = "Ray cluster"
    ADD_HINT = "orch clusters add {name} http://HEAD:8265 --hub folder:/shared/path"
    entry_type = Cluster
    status_type = ClusterStatus

    def save_status(self, status: ClusterStatus) -> None:
        """Atomic; last writer wins. A learned start-up time is kept across checks."""
        old = self.status(status.name)
        if old is not None and status.startup == STARTUP:
            status = replace(status, startup=old.startup)
        super().save_status(status)

    def learn_startup(self, name: str, seconds: float) -> None:
        """A worker joined ``seconds`` after it was asked for: averaged in (a quarter)."""
        old = self.status(name) or ClusterStatus(name=name, checked_at=0.0)
        learned = seconds if old.startup == STARTUP else 0.75 * old.startup + 0.25 * seconds
        self.save_status(replace(old, startup=max(learned, 0.1)))
