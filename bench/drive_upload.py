"""Uploading a big blob through DriveHub.put_file against a raw resumable upload
of the same bytes to the same local Drive v3 server. Goal: DriveHub ≥ 0.8× the
raw throughput.

Raw side: http.client, one keep-alive connection: POST
/upload/drive/v3/files?uploadType=resumable (bearer token, JSON metadata), then
PUT the file to the session URL in 64 MiB chunks (``Content-Range``). DriveHub
side: ``DriveHub(folder, credentials=fake.credentials(), api_url=fake.url)`` and
``put_file``, at its default ``chunk_size`` and at larger ones, to show what the
chunk size costs. Cases alternate, every upload is checked against its md5, and
each file is deleted after its round (the fake holds contents in memory).

The fake server runs in this process (a thread), as the brief asks: client and
server share the interpreter, so figures are loopback figures, where per-request
client overhead weighs more than it would over a real network.

Run: .venv/bin/python bench/drive_upload.py [--mb 200] [--rounds 3] [--chunks 64,256]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GOAL = 0.8
RAW_CHUNK = 64 << 20
MiB = 1 << 20


def raw_upload(fake: Any, parent: str, name: str, path: Path, chunk: int = RAW_CHUNK) -> str:
    """A plain resumable upload; returns the md5Checksum Drive reports."""
    size = path.stat().st_size
    conn = http.client.HTTPConnection(fake.host, fake.port, timeout=600)
    try:
        meta = json.dumps({"name": name, "parents": [parent]}).encode()
        conn.request("POST", "/upload/drive/v3/files?uploadType=resumable&supportsAllDrives=true"
                     "&fields=id,md5Checksum,size", body=meta, headers={
                         "Authorization": f"Bearer {fake.issue_token()}",
                         "Content-Type": "application/json; charset=UTF-8",
                         "X-Upload-Content-Type": "application/octet-stream",
                         "X-Upload-Content-Length": str(size)})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise SystemExit(f"raw upload: session start answered {resp.status}")
        loc = urlsplit(resp.getheader("Location") or "")
        target = f"{loc.path}?{loc.query}"
        offset, reply = 0, b""
        with open(path, "rb") as f:
            while offset < size:
                data = f.read(chunk)
                end = offset + len(data) - 1
                conn.request("PUT", target, body=data, headers={
                    "Content-Range": f"bytes {offset}-{end}/{size}",
                    "Content-Length": str(len(data))})
                resp = conn.getresponse()
                reply = resp.read()
                if resp.status not in (200, 201, 308):
                    raise SystemExit(f"raw upload: chunk answered {resp.status}: {reply[:200]!r}")
                offset = end + 1
        return str(json.loads(reply)["md5Checksum"])
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=200.0, help="size of the blob (MiB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunks", default="64,256",
                        help="larger DriveHub chunk sizes to try as well (MiB, comma-separated;"
                             " '' for none)")
    args = parser.parse_args()
    from orchestrator.hubs.drive import DriveHub
    from orchestrator.sandbox.drive import FakeDrive

    fake = FakeDrive()
    size = int(args.mb * MiB)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "blob.bin"
            with open(src, "wb") as out:
                out.writelines(os.urandom(MiB) for _ in range(size // MiB))
                out.write(os.urandom(size % MiB))
            h = hashlib.md5()
            with open(src, "rb") as f:
                for block in iter(lambda: f.read(8 * MiB), b""):
                    h.update(block)
            md5 = h.hexdigest()

            default_hub = DriveHub("bench-upload", credentials=fake.credentials(),
                                   api_url=fake.url)
            hubs: dict[str, DriveHub] = {
                f"DriveHub.put_file, chunk {default_hub.chunk_size // MiB} MiB (default)":
                    default_hub}
            for c in [int(x) for x in args.chunks.split(",") if x.strip()]:
                if c * MiB != default_hub.chunk_size:
                    hubs[f"DriveHub.put_file, chunk {c} MiB"] = DriveHub(
                        "bench-upload", credentials=fake.credentials(), api_url=fake.url,
                        chunk_size=c * MiB)
            parent = default_hub.root_id
            raw_name = f"raw resumable upload, {RAW_CHUNK // MiB} MiB PUTs (http.client)"

            def raw_case(k: int) -> float:
                t0 = time.perf_counter()
                got = raw_upload(fake, parent, f"raw-{k}", src)
                took = time.perf_counter() - t0
                assert got == md5, "raw upload: md5 mismatch"
                raw_delete(fake, parent, f"raw-{k}")
                return took

            def hub_case(hub: DriveHub, label: str) -> Callable[[int], float]:
                def run(k: int) -> float:
                    key = f"hub-{abs(hash(label)) % 1000}-{k}"
                    before = fake.stats["requests"]
                    t0 = time.perf_counter()
                    hub.put_file(key, src)
                    took = time.perf_counter() - t0
                    after = fake.stats["requests"]
                    chunks = (after.get("PUT /upload/drive/v3/files?upload_id", 0)
                              - before.get("PUT /upload/drive/v3/files?upload_id", 0))
                    requests[label] = sum(after.values()) - sum(before.values())
                    puts[label] = chunks
                    [meta] = fake.find(name=key, parent=parent, trashed=False)
                    assert meta.get("md5Checksum") == md5, f"{label}: md5 mismatch"
                    hub.delete(key)
                    return took
                return run

            requests: dict[str, int] = {}
            puts: dict[str, int] = {}
            cases: dict[str, Callable[[int], float]] = {raw_name: raw_case}
            for label, hub in hubs.items():
                cases[label] = hub_case(hub, label)
            times: dict[str, list[float]] = {k: [] for k in cases}
            for r in range(args.rounds):
                order = list(cases.items())
                if r % 2:
                    order.reverse()  # alternate who goes first
                for label, case in order:
                    times[label].append(case(r))
                    print(f"  round {r + 1}: {label}: {size / MiB / times[label][-1]:.0f} MiB/s",
                          flush=True)
    finally:
        fake.stop()

    raw_mbs = size / MiB / statistics.median(times[raw_name])
    print(f"\nUpload of a {size / MiB:.0f} MiB blob to the local Drive v3 server, "
          f"medians of {args.rounds} alternating rounds")
    default_ratio = 0.0
    for label, ts in times.items():
        mbs = size / MiB / statistics.median(ts)
        extra = "" if label == raw_name else (f"  {requests[label]} requests, "
                                              f"{puts[label]} chunk PUTs")
        print(f"  {label:58s} {mbs:7.0f} MiB/s  ({statistics.median(ts):.2f} s)  "
              f"ratio {mbs / raw_mbs:4.2f}×{extra}")
        if "(default)" in label:
            default_ratio = mbs / raw_mbs
    verdict = "meets" if default_ratio >= GOAL else "MISSES"
    print(f"  → DriveHub at its default chunk size ({default_hub.chunk_size // MiB} MiB): "
          f"{default_ratio:.2f}× the raw upload: {verdict} the goal ≥ {GOAL}×")


def raw_delete(fake: Any, parent: str, name: str) -> None:
    conn = http.client.HTTPConnection(fake.host, fake.port, timeout=60)
    try:
        for f in fake.find(name=name, parent=parent, trashed=False):
            conn.request("DELETE", f"/drive/v3/files/{f['id']}?supportsAllDrives=true",
                         headers={"Authorization": f"Bearer {fake.issue_token()}"})
            resp = conn.getresponse()
            resp.read()
    finally:
        conn.close()


if __name__ == "__main__":
    main()
