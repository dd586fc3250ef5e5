"""Who a project is: its id (written into its hubs' ``hub.json``) and its signing
key (signs manifests and assignments; see :mod:`orchestrator.signing`).

Both live in ``.orch/project.json``, mode 0600, written once by whoever first
needs them (``orch init``, ``orch submit``, the daemon) and never changed. The
key never enters a hub or a snapshot; a worker gets it another way (a local
worker reads it beside the hub, a Colab worker from a Colab secret).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ProjectError

FILE = "project.json"


@dataclass(frozen=True)
class Identity:
    """A project's id and signing key (hex). ``repr`` never shows the key."""

    project_id: str
    key: str

    def __repr__(self) -> str:
        return f"Identity(project_id={self.project_id!r})"


def identity_path(state_dir: Path) -> Path:
    return state_dir / FILE


def load_identity(state_dir: Path, create: bool = True) -> Identity:
    """The identity in ``state_dir``; made on first use (atomically: two processes
    that race both end up with the first one's). ProjectError if unreadable."""
    path = identity_path(state_dir)
    if create and not path.exists():
        doc = {"project_id": os.urandom(8).hex(), "key": os.urandom(32).hex()}
        tmp = path.with_name(f".{FILE}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(json.dumps(doc))
        try:
            os.link(tmp, path)  # fails if another process made it first: theirs wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return Identity(project_id=str(doc["project_id"]), key=str(doc["key"]))
    except FileNotFoundError:
        raise ProjectError(f"{path} is missing: run `orch init`") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProjectError(f"{path} is unreadable ({exc}); it holds the project's id and "
                           "signing key: restore it from a backup") from exc
