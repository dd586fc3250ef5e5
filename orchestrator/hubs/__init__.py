"""Hubs: the small file stores through which the daemon and workers talk.

``open_hub(url)`` picks the transport from the URL (a folder, or a Drive folder);
nothing above this package knows which one it has. ``claim_hub`` (project side)
and ``read_hub_info`` (worker side) check the protocol version and owner that a
hub records in ``hub.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import NotConfiguredError, ProtocolError, UsageError
from .base import Hub

if TYPE_CHECKING:
    from ..config import Project
    from ..protocol import HubInfo


def open_hub(url: str, credentials: Path | None = None, shared_drive: str | None = None,
             staleness: float = 2.0, api_url: str | None = None,
             retries: int | None = None) -> Hub:
    """``/path`` or ``folder:/path`` → FolderHub; ``drive:FOLDER`` → DriveHub (signed
    in with ``credentials``, else $ORCH_DRIVE_CREDENTIALS; the endpoint ``api_url``,
    else $ORCH_DRIVE_ROOT_URL if set; ``retries``: how often one Drive request is
    retried before it fails, default 8). SSH hosts' hubs come from :func:`project_hub`."""
    from .folder import FolderHub

    if not url:
        raise UsageError("no hub given")
    scheme, sep, rest = url.partition(":")
    if sep and scheme == "folder":
        return FolderHub(Path(rest))
    if sep and scheme == "drive":
        import os

        from .drive.auth import CREDENTIALS_ENV, load_credentials
        from .drive.hub import DriveHub

        path = credentials or (Path(os.environ[CREDENTIALS_ENV]) if os.environ.get(
            CREDENTIALS_ENV) else None)
        if path is None:
            raise UsageError(f"{url}: no Drive credentials: run `orch auth`, or pass "
                             f"--credentials / set {CREDENTIALS_ENV}")
        return DriveHub(rest, credentials=load_credentials(path),
                        shared_drive=shared_drive or None, staleness=staleness,
                        api_url=api_url, retries=8 if retries is None else retries)
    if sep and scheme in ("sftp", "ssh"):
        raise NotConfiguredError(f"{url}: a worker on an SSH host uses the hub folder there "
                                 "(--hub PATH); the daemon reaches it over SFTP once the "
                                 "host is added (`orch hosts add`)")
    return FolderHub(Path(url))


def project_hub(project: Project, name: str) -> Hub:
    """The hub called ``name`` of a project: ``local`` (its folder hub),
    ``remote`` (its ``hub`` setting, e.g. a Drive folder), ``ssh:HOST`` (the
    host's hub folder, over SFTP) or ``ray:NAME`` (the cluster's shared folder)."""
    if name == "local":
        return open_hub(project.hub_url)
    if name == "remote" and project.settings.hub:
        return open_hub(project.remote_hub_url, credentials=project.drive_credentials,
                        shared_drive=project.settings.drive_shared_drive,
                        staleness=project.settings.drive_poll_interval,
                        api_url=project.drive_url)
    if name.startswith("ssh:"):
        from ..hosts import Hosts
        from ..places.ssh import open_host_hub

        return open_host_hub(project, Hosts(project.state_dir).get(name[4:]))
    if name.startswith("ray:"):
        from ..clusters import Clusters
        from .folder import FolderHub

        cluster = Clusters(project.state_dir).get(name[4:])
        if cluster.via_host is not None:
            return project_hub(project, cluster.hub)
        return FolderHub(cluster.hub_path)
    raise UsageError(f"this project has no hub {name!r} (set `hub` in its settings)")


def read_hub_info(hub: Hub) -> HubInfo | None:
    """The hub's ``hub.json`` (None: not written yet). ProtocolError, in one line,
    if the hub speaks another protocol than this orch."""
    from .. import __version__
    from .. import protocol as P

    raw = hub.get_json(P.hub_json())
    if raw is None:
        return None
    if raw.get("protocol") != P.PROTOCOL_VERSION:
        raise ProtocolError(
            f"the hub {hub.url} speaks protocol {raw.get('protocol') or 1} (written by orch "
            f"{raw.get('orch', 'older than 0.2')}); this orch {__version__} speaks protocol "
            f"{P.PROTOCOL_VERSION}: install the same orch version on both sides")
    return P.HubInfo.from_dict(raw)


def claim_hub(hub: Hub, project_id: str) -> HubInfo:
    """Project side: make sure ``hub`` is this project's and speaks our protocol,
    writing ``hub.json`` if the hub is new. Idempotent."""
    from .. import __version__
    from .. import protocol as P

    info = read_hub_info(hub)
    if info is None:
        info = P.HubInfo(project_id=project_id, orch=__version__, created_at=time.time())
        hub.put_doc(P.hub_json(), info)
    elif info.project_id != project_id:
        raise ProtocolError(
            f"the hub {hub.url} belongs to another orch project (id {info.project_id}); "
            "give this project a folder of its own")
    return info


__all__ = ["Hub", "claim_hub", "open_hub", "project_hub", "read_hub_info"]
