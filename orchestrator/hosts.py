"""SSH hosts of a project: what `orch hosts add` records, and what the daemon last
learned of each host.

Files, all under ``.orch/`` (private to the user, never in a snapshot):

- ``hosts.json``: the hosts, written only by `orch hosts add/remove` (atomic
  rewrite). A key is referenced by its path, never copied; no password is stored.
- ``known_hosts``: host keys accepted with `orch hosts trust` (OpenSSH format),
  read together with ``~/.ssh/known_hosts``.
- ``host-status/NAME.json``: the last probe of a host (its Python, TensorFlow,
  GPUs, free disk, or the one-line problem that stops it), written by whoever
  probed it last (`orch hosts check`, the daemon). Read for display and placement.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import write_atomic
from .codec import decode, encode
from .errors import UsageError
from .registry import Registry

HOSTS_FILE = "hosts.json"
KNOWN_HOSTS = "known_hosts"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_ADDRESS = re.compile(r"^[A-Za-z0-9_.:-]{1,253}$")


@dataclass(frozen=True)
class Host:
    """One SSH host. ``workdir`` is the host's private folder for orch (its hub, the
    installed orch, the workers' scratch and logs); relative to the login folder
    unless absolute."""

    name: str
    user: str
    address: str
    port: int = 22
    key: str | None = None  # a private key file on this machine (never copied)
    python: str = "python3"
    workdir: str = ".orch-host"

    @property
    def destination(self) -> str:
        """``user@address:port`` as the user wrote it (IPv6 in brackets)."""
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.user}@{address}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The host as OpenSSH names it in known_hosts: ``[addr]:port`` off port 22."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


@dataclass(frozen=True)
class Gpu:
    index: str
    name: str
    memory_mb: float | None = None


@dataclass(frozen=True)
class HostStatus:
    """What a probe of a host found (``problem`` set: it cannot take work now, and
    that line says why)."""

    name: str
    checked_at: float
    python: str = ""
    tensorflow: str = ""  # its version; "" when not installed
    gpus: tuple[Gpu, ...] = ()
    free_mb: float | None = None
    home: str = ""  # the absolute workdir on the host
    problem: str = ""

    def to_json(self) -> str:
        return json.dumps(encode(self), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: Any) -> HostStatus:
        """Checked field by field (:mod:`.codec`): ProtocolError names what is wrong."""
        return decode(cls, raw, "host status")  # type: ignore[no-any-return]


def check_name(name: str) -> str:
    """A host name as `--on ssh:NAME` uses it (lower case: targets are)."""
    if not _NAME.match(name):
        raise UsageError(f"bad host name {name!r}: lower-case letters, digits, '.', '_', '-' "
                         "(up to 40), starting with a letter or digit")
    return name


def parse_destination(text: str, default_user: str) -> tuple[str, str, int]:
    """``[user@]host[:port]`` (IPv6: ``[::1]:22``) → (user, address, port)."""
    user, at, rest = text.strip().rpartition("@")
    user = user if at else default_user
    port = 22
    if rest.startswith("["):
        address, _, tail = rest[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else tail
    else:
        address, _, port_text = rest.partition(":")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UsageError(f"bad port in {text!r}: a number from 1 to 65535")
        port = int(port_text)
    if not _USER.match(user):
        raise UsageError(f"bad user name in {text!r}")
    if not address or not _ADDRESS.match(address):
        raise UsageError(f"bad host address in {text!r}: use user@host or user@host:port")
    return user, address, port


class Hosts(Registry[Host, HostStatus]):
    """The hosts of a project (``.orch/hosts.json``), their last probes
    (``host-status/``) and accepted host keys. Cheap to build; reads on use."""

    FILE = HOSTS_FILE
    KEY = "hosts"
    STATUS_DIR = "host-status"
    NOUN = "SSH host"
    ADD_HINT = "orch hosts add {name} user@address"
    entry_type = Host
    status_type = HostStatus

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.known_hosts = state_dir / KNOWN_HOSTS

    # ---- host keys ----------------------------------------------------------------

    def trust(self, host: Host, key_type: str, key_base64: str) -> None:
        """Append the host's key to ``.orch/known_hosts`` (idempotent)."""
        line = f"{host.known_hosts_name} {key_type} {key_base64}\n"
        old = self.known_hosts.read_text(encoding="utf-8") if self.known_hosts.exists() else ""
        if line not in old:
            write_atomic(self.known_hosts, old + line, mode=0o600)


@dataclass(frozen=True)
class Slot:
    """One worker a host runs: a GPU (``gpu`` its index) or the host's CPU."""

    host: str
    gpu: Gpu | None = None

    @property
    def name(self) -> str:
        return f"{self.host}-gpu{self.gpu.index}" if self.gpu else f"{self.host}-cpu"


def host_slots(host: Host, status: HostStatus | None) -> list[Slot]:
    """One slot per GPU the last probe found; the CPU when none."""
    gpus = status.gpus if status else ()
    return [Slot(host.name, g) for g in gpus] or [Slot(host.name)]
