"""Pointing a project at the sandbox (``orch sandbox use``).

Writes, in the project:

- ``.orch/sandbox-drive-credentials.json`` (mode 0600): credentials for the local
  Drive server, in the format `orch auth` leaves (a refresh token and the server's
  token endpoint). The project's own Google credentials are not touched;
- in ``orch.toml`` (made if missing): ``hub`` (unless it names a Drive folder
  already), ``drive_url``, ``drive_credentials``, ``colab_cli`` (orch's stand-in
  colab CLI for this sandbox), and ``colab_workers``/``colab_startup`` when given.
  Other lines are kept as they are; a key already set is replaced in place;

and registers the project's key as the stand-in Colab's secret ORCH_HUB_KEY.
Running it again gives the same files (idempotent). To go back to Google, remove
those keys from ``orch.toml``.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from ..atomic import write_atomic
from ..config import Project
from ..errors import NotConfiguredError
from .box import Sandbox, Server

CREDENTIALS = ".orch/sandbox-drive-credentials.json"


def colab_cli_command(box: Sandbox) -> str:
    """The ``colab_cli`` setting that runs orch's stand-in for this sandbox."""
    return shlex.join([sys.executable, "-m", "orchestrator.sandbox.colab_cli",
                       "--dir", str(box.folder)])


def write_credentials(box: Sandbox, server: Server, path: Path) -> None:
    """oauth2client credentials for the running server (needs the drive extra)."""
    try:
        from oauth2client.client import OAuth2Credentials
        from oauth2client.file import Storage
    except ImportError:
        raise NotConfiguredError("the sandbox's Drive needs orch's drive extra: "
                                 "pip install 'orch[drive,colab]'") from None
    creds = OAuth2Credentials(box.token(ttl=3600), "sandbox-client.apps.googleusercontent.com",
                              "sandbox-secret", "1//sandbox-refresh", None,
                              server.url + "token", "orch-sandbox")
    path.parent.mkdir(parents=True, exist_ok=True)
    Storage(str(path)).put(creds)
    path.chmod(0o600)


def toml_value(value: str | int | float) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def set_keys(text: str, values: Mapping[str, str | int | float]) -> str:
    """``text`` (an orch.toml) with each key set: replaced where it is set at the top
    level (or in an ``[orch]`` table, when the file has one), else added there."""
    lines = text.splitlines()
    table = next((i for i, ln in enumerate(lines) if ln.strip() == "[orch]"), None)
    start = 0 if table is None else table + 1
    end = next((i for i in range(start, len(lines)) if lines[i].lstrip().startswith("[")),
               len(lines))
    added: list[str] = []
    for key, value in values.items():
        line = f"{key} = {toml_value(value)}"
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        found = next((i for i in range(start, end) if pattern.match(lines[i])), None)
        if found is None:
            added.append(line)
        else:
            lines[found] = line
    while end > start and not lines[end - 1].strip():
        end -= 1
    lines[end:end] = added
    return "\n".join(lines) + "\n"


def use(project: Project, box: Sandbox, colab_workers: int | None,
        colab_startup: float | None) -> dict[str, str | int | float]:
    """Point ``project`` at the running sandbox; the settings written."""
    server = box.require()
    write_credentials(box, server, project.root / CREDENTIALS)
    values: dict[str, str | int | float] = {}
    if not project.settings.hub.startswith("drive"):
        values["hub"] = "drive"
    values.update({"drive_url": server.url, "drive_credentials": CREDENTIALS,
                   "colab_cli": colab_cli_command(box)})
    if colab_workers is not None:
        values["colab_workers"] = colab_workers
    if colab_startup is not None:
        values["colab_startup"] = colab_startup
    toml = project.root / "orch.toml"
    write_atomic(toml, set_keys(toml.read_text(encoding="utf-8") if toml.exists() else "",
                                values))
    from ..identity import load_identity

    box.set_secret("ORCH_HUB_KEY", load_identity(project.state_dir).key)
    return values
