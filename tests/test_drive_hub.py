"""DriveHub beyond the hub contract: request cost, retries, resumable uploads,
duplicates, checksums and lag, through the real google-api-python-client against
the local Drive v3 server."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator import protocol as P
from orchestrator.errors import HubError
from orchestrator.hubs.drive import DriveHub

from .conftest import drive_hub, wait_for


def folder_for(tmp_path: Path) -> str:
    return f"unit/{tmp_path.parent.name}-{tmp_path.name}"


def settle(hub: DriveHub) -> None:
    """Let the hub's view go stale, as between two daemon ticks."""
    time.sleep(hub.staleness + 0.05)


def test_an_idle_tick_costs_one_request(drive: Any, tmp_path: Path) -> None:
    hub = drive_hub(folder_for(tmp_path))
    hub.put_json(P.heartbeat("w1"), {"worker_id": "w1", "seq": 1})
    hub.put_json(P.status("j1", 1), {"phase": "running"})

    def tick() -> None:  # what a daemon tick reads
        for wid in hub.list("workers"):
            hub.get_json(P.heartbeat(wid))
        hub.get_json(P.status("j1", 1))
        hub.exists(P.cancel("j1"))

    tick()  # warm: folders indexed, small files cached
    settle(hub)
    drive.reset_stats()
    tick()
    assert drive.stats["total_requests"] == 1
    assert drive.requests("GET", "/drive/v3/changes") == 1


def test_changes_by_another_party_are_seen(drive: Any, tmp_path: Path) -> None:
    hub, peer = drive_hub(folder_for(tmp_path)), drive_hub(folder_for(tmp_path))
    hub.put_json(P.status("j1", 1), {"phase": "running"})
    assert hub.get_json(P.status("j1", 1)) == {"phase": "running"}
    peer.put_json(P.status("j1", 1), {"phase": "succeeded"})
    peer.put_bytes("workers/w9/heartbeat.json", b"{}")
    wait_for(lambda: hub.get_json(P.status("j1", 1)) == {"phase": "succeeded"},
             timeout=10, message="peer's rewrite seen")
    assert hub.list("workers") == ["w9"]
    watcher = peer.watch()
    hub.delete(P.status("j1", 1))
    assert watcher.wait(10)
    wait_for(lambda: not peer.exists(P.status("j1", 1)), timeout=10, message="delete seen")


@pytest.mark.parametrize("kind", ["rateLimitExceeded", "userRateLimitExceeded", "429", "500",
                                  "503", "drop"])
def test_transient_failures_are_retried(drive: Any, tmp_path: Path, kind: str) -> None:
    hub = drive_hub(folder_for(tmp_path))
    drive.faults.fail_next(3, kind)
    hub.put_bytes("a/b.txt", b"hello")
    drive.faults.fail_next(2, kind)
    assert drive_hub(folder_for(tmp_path)).get_bytes("a/b.txt") == b"hello"
    assert sum(drive.stats["faults_injected"].values()) >= 5


def test_failures_beyond_the_retry_bound_give_one_clear_error(drive: Any,
                                                               tmp_path: Path) -> None:
    hub = drive_hub(folder_for(tmp_path), retries=2)
    drive.faults.fail_next(10, "503")
    with pytest.raises(HubError) as err:
        hub.put_bytes("x/y.json", b"{}")
    message = str(err.value)
    assert "y.json" in message and "503" in message and "\n" not in message
    drive.faults.clear()


def test_refused_credentials_fail_once_with_a_clear_error(drive: Any, tmp_path: Path) -> None:
    from oauth2client.client import AccessTokenCredentials

    drive.reset_stats()
    with pytest.raises(HubError) as err:  # a forged token, and nothing to refresh it with
        DriveHub(folder_for(tmp_path), api_url=drive.url, backoff=0.01,
                 credentials=AccessTokenCredentials("forged", "orch-tests"))
    assert str(err.value).startswith("Drive ") and " failed for " in str(err.value)
    assert drive.stats["total_requests"] == 1  # a refusal is not retried


def test_large_file_goes_up_in_resumable_chunks_and_survives_a_dropped_chunk(
        drive: Any, tmp_path: Path) -> None:
    hub = drive_hub(folder_for(tmp_path), chunk_size=256 * 1024, multipart_limit=256 * 1024)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(5 * 256 * 1024 + 123))
    drive.reset_stats()
    drive.faults.fail_next(1, "drop", match=r"^PUT /upload/.*upload_id")
    drive.faults.fail_next(1, "503", match=r"^PUT /upload/.*upload_id")
    hub.put_file("blobs/big", src)
    assert drive.requests("POST", "/upload/drive/v3/files?uploadType=resumable") == 1
    out = tmp_path / "back.bin"
    drive_hub(folder_for(tmp_path)).get_file("blobs/big", out)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    meta = drive.find(name="big")[-1]
    assert meta["md5Checksum"] == hashlib.md5(src.read_bytes()).hexdigest()


def test_newest_duplicate_wins_and_its_writer_removes_the_rest(drive: Any,
                                                               tmp_path: Path) -> None:
    hub = drive_hub(folder_for(tmp_path))
    hub.put_bytes("runs/j/1/status.json", b'{"v": 1}')
    parent = drive.find(name="status.json")[-1]["parents"][0]
    # a retried create that had in fact succeeded leaves a second file of the name
    other = drive_hub(folder_for(tmp_path))
    svc = other.client.svc()
    svc.files().create(body={"name": "status.json", "parents": [parent]},
                       media_body=_media(b'{"v": 2}')).execute()
    reader = drive_hub(folder_for(tmp_path))
    assert reader.get_bytes("runs/j/1/status.json") == b'{"v": 2}'
    assert reader.list("runs/j/1") == ["status.json"]
    settle(hub)
    hub.list("runs/j/1")  # a read syncs (a write alone accepts a staler view)
    hub.put_bytes("runs/j/1/status.json", b'{"v": 3}')
    left = drive.find(name="status.json", parent=parent, trashed=False)
    assert len(left) == 1
    assert drive_hub(folder_for(tmp_path)).get_bytes("runs/j/1/status.json") == b'{"v": 3}'


def _media(data: bytes) -> Any:
    import io

    from googleapiclient.http import MediaIoBaseUpload

    return MediaIoBaseUpload(io.BytesIO(data), "application/octet-stream")


def test_corrupt_download_is_refused(drive: Any, tmp_path: Path) -> None:
    hub = drive_hub(folder_for(tmp_path), retries=1)
    hub.put_bytes("r/result.tar", b"sealed bytes" * 100)
    meta = drive.find(name="result.tar")[-1]
    with drive.state.lock:
        drive.state.contents[meta["id"]] = b"tampered bytes" * 100  # md5 no longer matches
    fresh = drive_hub(folder_for(tmp_path), retries=1)
    with pytest.raises(HubError, match="md5"):
        fresh.get_bytes("r/result.tar")
    with pytest.raises(HubError, match="md5"):
        fresh.get_file("r/result.tar", tmp_path / "out.tar")
    assert not (tmp_path / "out.tar").exists()


def test_own_writes_are_visible_while_listings_lag(drive: Any, tmp_path: Path) -> None:
    hub, peer = drive_hub(folder_for(tmp_path)), drive_hub(folder_for(tmp_path))
    peer.list("jobs")
    drive.faults.lag = 3.0
    hub.put_json(P.manifest("j1"), {"job_id": "j1"})
    assert hub.get_json(P.manifest("j1")) == {"job_id": "j1"}  # read-your-writes
    assert hub.list("jobs") == ["j1"]
    settle(peer)
    assert peer.list("jobs") == []  # the peer's listing lags, as Drive's does
    wait_for(lambda: peer.list("jobs") == ["j1"], timeout=15, message="lag passes")
    # the manifest was made after its folder: its own lag may end a moment later
    wait_for(lambda: peer.get_json(P.manifest("j1")) == {"job_id": "j1"}, timeout=15,
             message="the manifest's lag passes too")


def test_repr_never_shows_credentials(drive: Any, tmp_path: Path) -> None:
    creds = drive.credentials()
    hub = DriveHub(folder_for(tmp_path), credentials=creds, api_url=drive.url)
    assert creds.access_token not in repr(hub) and creds.access_token not in str(vars(hub))
    assert "fake-client-secret" not in repr(hub)
