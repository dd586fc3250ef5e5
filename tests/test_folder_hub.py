"""FolderHub specifics beyond the protocol: atomic writes and change events."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from orchestrator.hubs.folder import FolderHub


def drain(watcher: object) -> None:
    while watcher.wait(0.3):  # type: ignore[attr-defined]
        pass


def test_watcher_wakes_on_writes_but_not_on_reads(tmp_path: Path) -> None:
    hub = FolderHub(tmp_path / "hub")
    hub.put_bytes("runs/j/1/status.json", b"{}")
    watcher = hub.watch()
    try:
        drain(watcher)
        for _ in range(20):  # what a daemon tick does: read, list, stat
            hub.get_bytes("runs/j/1/status.json")
            hub.list("runs/j/1")
            hub.exists("runs/j/1/status.json")
        assert not watcher.wait(1.0), "reading the hub woke the watcher (busy loop)"
        hub.put_bytes("runs/j/1/status.json", b'{"phase": "running"}')
        assert watcher.wait(10.0), "a write did not wake the watcher"
        drain(watcher)
        hub.delete("runs/j/1/status.json")
        assert watcher.wait(10.0), "a delete did not wake the watcher"
    finally:
        watcher.close()


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    hub = FolderHub(tmp_path / "hub")
    big, small = os.urandom(4 << 20), b"x" * 10
    hub.put_bytes("k", small)
    stop = threading.Event()
    seen: set[int] = set()

    def read() -> None:
        while not stop.is_set():
            seen.add(len(hub.get_bytes("k")))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(30):
            hub.put_bytes("k", big if i % 2 else small)
    finally:
        stop.set()
        reader.join()
    assert seen <= {len(big), len(small)}
    assert hub.list("") == ["k"]  # no temporary files left behind, none listed
