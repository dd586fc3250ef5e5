"""Registry: the places a user adds by name (SSH hosts, Ray clusters), one JSON file
under ``.orch/`` each, and the last check of each in a status file of its own.

- ``.orch/FILE`` (``{"KEY": [entries]}``): written only by the CLI's ``add`` and
  ``remove`` (atomic rewrite, 0600); read on use, so the daemon sees changes.
- ``.orch/STATUS_DIR/NAME.json``: what the last check of an entry found, or the
  one-line problem that stops it; written by whoever checked last (atomic, last
  writer wins: a check is a snapshot in time).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from .atomic import write_atomic
from .errors import NotConfiguredError, ProjectError, ProtocolError, UsageError


class Named(Protocol):
    @property
    def name(self) -> str: ...


class Status(Named, Protocol):
    @property
    def problem(self) -> str: ...

    def to_json(self) -> str: ...


E = TypeVar("E", bound=Named)
S = TypeVar("S", bound=Status)


class Registry(Generic[E, S]):
    """The entries of one kind. Subclasses say which (file, key, types, wording)."""

    FILE: ClassVar[str]
    KEY: ClassVar[str]  # the JSON list's name, and the CLI group (`orch hosts`)
    STATUS_DIR: ClassVar[str]
    NOUN: ClassVar[str]  # "SSH host"
    ADD_HINT: ClassVar[str]  # how to add one, with {name}
    entry_type: type[E]
    status_type: type[S]

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / self.FILE
        self.status_dir = state_dir / self.STATUS_DIR

    def all(self) -> list[E]:
        """Every entry, by name. ProjectError (one line) if the file is damaged."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            entries = sorted(raw[self.KEY], key=lambda e: e["name"])
            return [self.entry_type(**e) for e in entries]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ProjectError(f"cannot read {self.path}: {exc}; fix or remove it "
                               f"(`orch {self.KEY} add` writes it again)") from exc

    def get(self, name: str) -> E:
        found = next((e for e in self.all() if e.name == name), None)
        if found is None:
            known = ", ".join(e.name for e in self.all()) or "none yet"
            raise NotConfiguredError(f"no {self.NOUN} {name!r} ({self.KEY}: {known}); add it "
                                     f"with `{self.ADD_HINT.format(name=name)}`")
        return found

    def _write(self, entries: list[E]) -> None:
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        ordered = sorted(entries, key=lambda e: e.name)
        body = {self.KEY: [asdict(e) for e in ordered]}  # type: ignore[call-overload]
        write_atomic(self.path, json.dumps(body, indent=2, sort_keys=True) + "\n", mode=0o600)

    def add(self, entry: E, replace: bool = False) -> None:
        """Record ``entry``; UsageError if its name is taken (unless ``replace``). A
        changed entry's last check is forgotten (it was of something else)."""
        old = self.all()
        others = [e for e in old if e.name != entry.name]
        if not replace and len(others) != len(old):
            raise UsageError(f"{self.NOUN.split()[-1]} {entry.name!r} exists; remove it "
                             "first, or add with --replace")
        self._write([*others, entry])
        if entry not in old:
            (self.status_dir / f"{entry.name}.json").unlink(missing_ok=True)

    def remove(self, name: str) -> E:
        entry = self.get(name)
        self._write([e for e in self.all() if e.name != name])
        (self.status_dir / f"{name}.json").unlink(missing_ok=True)
        return entry

    def status(self, name: str) -> S | None:
        try:
            raw = json.loads((self.status_dir / f"{name}.json").read_text(encoding="utf-8"))
            return self.status_type.from_dict(raw)  # type: ignore[attr-defined, no-any-return]
        except (OSError, ValueError, ProtocolError):
            return None

    def save_status(self, status: S) -> None:
        """Atomic; last writer wins."""
        self.status_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(self.status_dir / f"{status.name}.json", status.to_json())

    def note_problem(self, name: str, problem: str) -> None:
        """Keep what was last learned of an entry, with ``problem`` ("" clears it)."""
        old: Any = self.status(name) or self.status_type(  # type: ignore[call-arg]
            name=name, checked_at=0.0)
        if old.problem != problem:
            self.save_status(replace(old, problem=problem, checked_at=time.time()))
