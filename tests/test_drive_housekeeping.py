"""Drive housekeeping against the local Drive v3 server: one hub folder when several
parties start at once, duplicate folders (lost answers, old races) merged away,
checkpoints that keep one revision, a full Drive that stops uploads in one line, and
an idle worker that makes few requests."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from orchestrator import protocol as P
from orchestrator.errors import HubFullError
from orchestrator.sandbox.drive.resources import FOLDER_MIME

from .conftest import drive_hub, wait_for
from .test_drive_hub import folder_for

FOLDER_CREATE = r"^POST /drive/v3/files(\?|$)"

# One party of the race: opens the hub when the go file appears (all at once), writes
# its own document, then reads until it sees every party's and one hub folder (and
# at least ``stay`` seconds: parties run on, and tidy, as workers do), for at most
# ``cap`` seconds.
PARTY = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from orchestrator.hubs.drive import DriveHub
    from orchestrator.hubs.drive.auth import load_credentials
    url, creds, folder, me, n, settle, stay, run, cap = sys.argv[1:10]
    run = Path(run)
    credentials = load_credentials(Path(creds))
    from orchestrator.hubs.drive.api import build_service
    build_service(credentials, url)  # imports done before the start
    (run / f"ready-{me}").touch()
    while not (run / "go").exists():
        time.sleep(0.001)
    hub = DriveHub(folder, credentials=credentials, api_url=url, staleness=0.2,
                   backoff=0.01, max_backoff=0.2, settle=float(settle))
    hub.put_json(f"peers/{me}.json", {"me": me})
    start = time.monotonic()
    while time.monotonic() < start + float(cap):
        seen = hub.list("peers")
        if len(seen) == int(n) and len(hub.index.folders[""].ids) == 1 and \
                time.monotonic() > start + float(stay):
            break
        time.sleep(0.1)
    docs = [hub.get_json(f"peers/{p}") for p in seen]
    print(json.dumps({"root": hub.index.folders[""].ids, "seen": docs}))
""")


def race(drive: Any, tmp_path: Path, folder: str, n: int, settle: float,
         stay: float = 0, cap: float = 30) -> list[dict[str, Any]]:
    """Start ``n`` processes that open the hub ``folder`` at the same instant; each
    stops once it sees them all in one folder (after ``stay`` s), or after ``cap`` s.
    The default cap is less than the first test's settle time (no merge happens)."""
    from tests.drive_project import clean_env

    tmp_path.mkdir(exist_ok=True)
    creds = tmp_path / "creds.json"
    drive.write_credentials(creds)
    script = tmp_path / "party.py"
    script.write_text(PARTY)
    procs = [subprocess.Popen(
        [sys.executable, str(script), drive.url, str(creds), folder, f"p{i}", str(n),
         str(settle), str(stay), str(tmp_path), str(cap)], env=clean_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(n)]
    try:
        wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == n, timeout=120,
                 message="every party ready")
        (tmp_path / "go").touch()  # the barrier opens
        outs = [p.communicate(timeout=150) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]

    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


def made_folders(drive: Any, name: str) -> set[str]:
    """Ids of every folder ever called ``name`` (the change log keeps deleted ones)."""
    with drive.state.lock:
        return {c.file_id for c in drive.state.changes
                if c.snapshot is not None and c.snapshot.name == name and c.snapshot.is_folder}


def live_folders(drive: Any, name: str, parent: str | None = None) -> list[dict[str, Any]]:
    return [f for f in drive.find(name=name, parent=parent, trashed=False)
            if f["mimeType"] == FOLDER_MIME]


def test_parties_starting_together_use_one_hub_folder(drive: Any, tmp_path: Path) -> None:
    parent = drive_hub(folder_for(tmp_path)).root_id  # the race is for "hubN" in it
    # until the race was real: several parties created one (each try takes a few
    # seconds; on an idle machine most tries see one create, so up to 20)
    for attempt in range(20):
        name = f"hub{attempt}"
        results = race(drive, tmp_path / name, f"{folder_for(tmp_path)}/{name}", n=4,
                       settle=60)
        roots = {tuple(r["root"]) for r in results}
        assert len(roots) == 1 and len(next(iter(roots))) == 1, results  # one for all
        assert [f["id"] for f in live_folders(drive, name, parent)] == \
            list(next(iter(roots)))
        for r in results:  # every party's document is seen by every party
            assert sorted(d["me"] for d in r["seen"]) == ["p0", "p1", "p2", "p3"]
        if len(made_folders(drive, name)) > 1:
            break
    else:
        pytest.fail("the parties never raced in 20 tries (one create each time)")


def test_parties_whose_listings_lag_converge_on_the_oldest_folder(drive: Any,
                                                                   tmp_path: Path) -> None:
    import time

    parent = drive_hub(folder_for(tmp_path)).root_id
    listed = time.monotonic()
    wait_for(lambda: time.monotonic() - listed > 1.5, timeout=5)  # the parent is listed
    drive.faults.lag = 1.0  # nobody sees another's new folder at first: each makes one
    for attempt in range(3):  # until the race was real (under load, one may come late)
        name = f"hub{attempt}"
        folder = f"{folder_for(tmp_path)}/{name}"
        # a merge takes several tidies 2 s apart, each waiting out the lag, by three
        # parties at once: on a loaded machine that has taken more than 30 s
        results = race(drive, tmp_path / name, folder, n=3, settle=2, stay=8, cap=90)
        live = live_folders(drive, name, parent)
        # one folder on Drive, and every party writes there (the oldest it knows)
        assert len(live) == 1 and {r["root"][0] for r in results} == {live[0]["id"]}, \
            (results, live)
        for r in results:
            assert sorted(d["me"] for d in r["seen"]) == ["p0", "p1", "p2"]
        assert len(drive_hub(folder).list("peers")) == 3  # every document moved into it
        # the race this test is about: duplicates that stayed, merged and trashed (a
        # creator that already sees an older folder deletes its own at once instead)
        made = drive.find(name=name, parent=parent, trashed=True)
        if made:
            break
    else:
        pytest.fail("no duplicate folder stayed to be merged in 3 races")
    oldest = min([*live, *made], key=lambda f: (f["createdTime"], f["id"]))
    assert live[0]["id"] == oldest["id"]


def test_a_lost_answer_to_a_folder_create_leaves_one_folder(drive: Any, tmp_path: Path) -> None:
    parent = drive_hub(folder_for(tmp_path)).root_id
    drive.faults.injected_counts(reset=True)
    drive.faults.fail_next(1, "lost", match=FOLDER_CREATE)  # made, but the answer is lost
    hub = drive_hub(folder_for(tmp_path) + "/hub")
    assert drive.faults.injected_counts() == {"lost": 1}
    assert len(live_folders(drive, "hub", parent)) == 1
    drive.faults.fail_next(1, "lost", match=FOLDER_CREATE)
    hub.put_bytes("runs/j1/status.json", b"{}")
    assert len(live_folders(drive, "runs", parent=hub.root_id)) == 1
    runs = live_folders(drive, "runs", parent=hub.root_id)[0]["id"]
    assert len(live_folders(drive, "j1", parent=runs)) == 1
    assert drive_hub(folder_for(tmp_path) + "/hub").get_bytes("runs/j1/status.json") == b"{}"


def test_old_duplicate_folders_are_merged_into_the_oldest(drive: Any, tmp_path: Path) -> None:
    parent = drive_hub(folder_for(tmp_path)).root_id
    svc = drive_hub(folder_for(tmp_path)).client.svc()

    def folder(name: str, inside: str, created: str) -> str:
        return str(svc.files().create(body={
            "name": name, "mimeType": FOLDER_MIME, "parents": [inside],
            "createdTime": created}, fields="id").execute()["id"])

    def put(name: str, inside: str, data: bytes) -> None:
        from .test_drive_hub import _media
        svc.files().create(body={"name": name, "parents": [inside]},
                           media_body=_media(data)).execute()

    older = folder("hub", parent, "2026-01-01T00:00:00.000Z")
    newer = folder("hub", parent, "2026-01-01T00:05:00.000Z")
    put("hub.json", older, b"old")
    put("a.txt", newer, b"a")
    put("b.txt", folder("runs", older, "2026-01-01T00:00:01.000Z"), b"b")
    put("c.txt", folder("runs", newer, "2026-01-01T00:05:01.000Z"), b"c")

    hub = drive_hub(folder_for(tmp_path) + "/hub", settle=5)
    assert [f["id"] for f in live_folders(drive, "hub", parent)] == [older]
    assert drive.file(newer)["trashed"]
    assert len(live_folders(drive, "runs", older)) == 1  # merged, not moved in beside
    assert hub.list("") == ["a.txt", "hub.json", "runs"]
    assert hub.list("runs") == ["b.txt", "c.txt"]
    fresh = drive_hub(folder_for(tmp_path) + "/hub", settle=5)
    assert fresh.get_bytes("runs/c.txt") == b"c" and fresh.get_bytes("a.txt") == b"a"


def revisions(drive: Any, file_id: str) -> int:
    with drive.state.lock:
        return len(drive.state.revisions.list(file_id))


def test_checkpoint_updates_keep_one_revision(drive: Any, tmp_path: Path) -> None:
    hub = drive_hub(folder_for(tmp_path))
    key = P.ckpt("j1", 1)
    src = tmp_path / "ckpt.tar"
    ids = set()
    for epoch in range(10):
        src.write_bytes(bytes([epoch]) * (1536 * 1024))  # over the hub's prune size
        hub.put_file(key, src)
        ids.add(hub.file_id(key))
        assert revisions(drive, hub.file_id(key)) == 1
    assert len(ids) == 1  # updated in place: links to it stay valid
    assert drive_hub(folder_for(tmp_path)).get_bytes(key) == bytes([9]) * (1536 * 1024)
    small = P.ckpt("j2", 1)  # a small model's checkpoint keeps one revision too
    for epoch in range(3):
        hub.put_bytes(small, bytes([epoch]) * 100)
    assert revisions(drive, hub.file_id(small)) == 1
    # what pruning saves: the local server keeps every version, as Drive does
    hub.put_bytes("small.json", b"1")
    hub.put_bytes("small.json", b"2")
    hub.put_bytes("small.json", b"3")
    assert revisions(drive, hub.file_id("small.json")) == 3


def test_the_local_server_keeps_revisions_as_drive_does(drive: Any, tmp_path: Path) -> None:
    hub = drive_hub(folder_for(tmp_path))
    hub.put_bytes("f.bin", b"one")
    file_id = hub.file_id("f.bin")
    svc = hub.client.svc()
    from .test_drive_hub import _media
    svc.files().update(fileId=file_id, media_body=_media(b"two"),
                       keepRevisionForever=True).execute()
    svc.files().update(fileId=file_id, body={"description": "no new content"}).execute()
    revs = svc.revisions().list(fileId=file_id, fields="revisions(id,keepForever,size)",
                                ).execute()["revisions"]
    assert [(r["keepForever"], r["size"]) for r in revs] == [(False, "3"), (True, "3")]
    from googleapiclient.errors import HttpError
    with pytest.raises(HttpError) as head:
        svc.revisions().delete(fileId=file_id, revisionId=revs[-1]["id"]).execute()
    assert head.value.resp.status == 400
    svc.revisions().delete(fileId=file_id, revisionId=revs[0]["id"]).execute()
    assert [r["id"] for r in svc.revisions().list(fileId=file_id).execute()["revisions"]] \
        == [revs[-1]["id"]]


def test_a_full_drive_stops_the_upload_in_one_line(drive: Any, tmp_path: Path) -> None:
    hub = drive_hub(folder_for(tmp_path))
    src = tmp_path / "ckpt.tar"
    src.write_bytes(b"x" * (6 << 20))  # a resumable upload
    drive.faults.fail_next(20, "quota", match="^POST /upload/")
    drive.reset_stats()
    with pytest.raises(HubFullError) as full:
        hub.put_file(P.ckpt("j1", 1), src)
    message = str(full.value)
    assert "quota exceeded" in message and "runs/j1/ckpt/1.tar" in message
    assert "\n" not in message
    assert drive.requests("POST", "/upload/drive/v3/files?uploadType=resumable") == 1
    with pytest.raises(HubFullError):  # small files too
        hub.put_bytes("runs/j1/1/status.json", b"{}")
    drive.faults.clear()


def test_an_idle_drive_worker_makes_a_request_every_few_seconds(drive: Any,
                                                                 tmp_path: Path) -> None:
    import time

    from orchestrator.hubs import claim_hub
    from tests.drive_project import DriveProject

    project = DriveProject(tmp_path / "proj", drive, folder_for(tmp_path))
    claim_hub(drive_hub(project.folder), "p-idle")  # what the daemon does first
    watcher = drive_hub(project.folder)
    worker = project.worker("idle-1", idle_timeout=600)  # orch's Drive defaults
    try:
        wait_for(lambda: watcher.list("workers"), timeout=60, message="first heartbeat")
        # past its first checks and the hub's early re-scans of its path (about 6 and
        # 30 s after its start; the next after two minutes), as a worker idle for long
        begun = time.monotonic()
        wait_for(lambda: worker.poll() is not None or time.monotonic() - begun > 36,
                 timeout=60, interval=0.5)
        drive.reset_stats()
        start = time.monotonic()
        wait_for(lambda: worker.poll() is not None or time.monotonic() - start > 12,
                 timeout=40, interval=0.5)
        assert worker.poll() is None, "the idle worker died"
        stats = drive.stats
        window = time.monotonic() - start
    finally:
        project.stop_worker(worker)
    print(f"{stats['total_requests']} requests in {window:.1f} s: {stats['requests']}")
    # one per 3 s at most; +1: a periodic request may fall at both ends of the window
    assert stats["total_requests"] <= window / 3 + 1, stats["requests"]
    assert drive.requests("GET", "/drive/v3/changes") >= 2  # it does keep checking


CKPT_SCRIPT = """\
import os, pathlib, time
run = pathlib.Path(os.environ["ORCH_RUN_DIR"])
for epoch in range(3):  # a checkpoint over the multipart limit: a resumable upload
    tmp = run / "ckpt.tmp"
    tmp.write_bytes(bytes([epoch]) * (6 << 20))
    os.replace(tmp, run / "ckpt.tar")
    time.sleep(1.5)
(pathlib.Path(os.environ["ORCH_OUTPUT_DIR"]) / "model.bin").write_bytes(b"trained")
print("trained")
"""


def test_a_full_drive_keeps_the_workers_checkpoint_and_the_job_goes_on(
        project_dir: Path, drive: Any) -> None:
    from orchestrator.models import JobState

    from .conftest import drive_project, kill_processes_of, read_job

    p = drive_project(project_dir, drive)
    (project_dir / "ckpt.py").write_text(CKPT_SCRIPT)
    try:
        drive.faults.fail_next(100, "quota", match="uploadType=resumable")
        drive.reset_stats()
        worker = p.worker("remote-q", heartbeat=1.0, poll=0.3, idle_timeout=120)
        job_id = p.submit("--wait", "ckpt.py")
        assert read_job(project_dir, job_id).state is JobState.PULLED  # training went on
        assert (project_dir / "models" / "ckpt" / "model.bin").read_bytes() == b"trained"
        kept = project_dir.parent / "work-remote-q" / "kept" / f"{job_id}.1.ckpt.tar"
        assert kept.read_bytes() == bytes([2]) * (6 << 20)  # the newest, on this machine
        assert drive.requests("POST", "/upload/drive/v3/files?uploadType=resumable") == 1
        p.stop_worker(worker)
        log = (project_dir.parent / "remote-q.log").read_text()
        lines = [line for line in log.splitlines() if "quota exceeded" in line]
        assert len(lines) == 1 and f"runs/{job_id}/ckpt/1.tar" in lines[0], log[-3000:]
        assert str(kept) in lines[0]
        assert "Traceback" not in log
    finally:
        drive.faults.clear()
        for w in p.workers:
            w.kill()
        kill_processes_of(project_dir.parent)
