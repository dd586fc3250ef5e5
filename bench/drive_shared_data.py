"""Bytes uploaded to Drive for a second job that shares its data with a first.
Goal: no more than the code snapshot plus the job's small protocol files (the
data, already on Drive by its sha256, is not sent again).

A project with a 20 MB data file and the Drive hub on the local fake server; the
real CLI and daemon, one real Drive worker. Job 1 (`--data data.bin`) runs to
PULLED; the fake's counters are reset; job 2 (same data, same code, another
`--name`) runs to PULLED. The daemon and the worker each talk through a counting
relay, so every byte is charged to a party and a Drive file name.

Ratio = bytes received by the fake for job 2 / (snapshot blob + job 2's non-blob
uploads). ≤ 1 meets the goal: nothing beyond the snapshot and protocol files.

Run: .venv/bin/python bench/drive_shared_data.py [--mb 20]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import compile_package
from bench.drive_common import CountingRelay, DriveProject, print_routes
from orchestrator.store import Store

SCRIPT = """\
import os, pathlib
data = pathlib.Path("data.bin").read_bytes()
out = pathlib.Path(os.environ["ORCH_OUTPUT_DIR"])
(out / "model.bin").write_bytes(len(data).to_bytes(8, "big") * 1000)
print("read", len(data), "bytes of data")
"""

SHA = re.compile(r"^[0-9a-f]{64}$")


def kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=20.0, help="size of the shared data file")
    args = parser.parse_args()
    from orchestrator.sandbox.drive import FakeDrive

    compile_package()
    fake = FakeDrive()

    def namer(file_id: str) -> str | None:
        try:
            return str(fake.file(file_id)["name"])
        except KeyError:
            return None

    via_daemon = CountingRelay(fake.host, fake.port, namer)
    via_worker = CountingRelay(fake.host, fake.port, namer)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        p = DriveProject(Path(tmp) / "proj", fake, "orch-hub/shared", settings=(
            "tick_interval = 0.5\ndrive_poll_interval = 0.5\ndaemon_idle_timeout = 600\n"))
        p.env["ORCH_DRIVE_ROOT_URL"] = via_daemon.url  # the CLI and the daemon it starts
        data_size = int(args.mb * (1 << 20))
        (p.root / "data.bin").write_bytes(os.urandom(data_size))
        (p.root / "train.py").write_text(SCRIPT)
        try:
            p.worker("remote-1", "--poll", "0.5", api_url=via_worker.url)
            jobs = []
            for name in ("first", "second"):
                fake.reset_stats()
                via_daemon.reset()
                via_worker.reset()
                t0 = time.monotonic()
                proc = p.orch("submit", "--on", "remote", "--wait", "--data", "data.bin",
                              "--name", name, "train.py", timeout=300, check=True)
                took = time.monotonic() - t0
                job_id = proc.stdout.split()[0]
                jobs.append(job_id)
                out[name] = {"fake": fake.stats, "daemon": via_daemon.snapshot(),
                             "worker": via_worker.snapshot(), "secs": took,
                             "daemon_files": dict(via_daemon.by_name),
                             "worker_files": dict(via_worker.by_name)}
            with Store(p.db) as store:
                j1, j2 = store.get(jobs[0]), store.get(jobs[1])
            assert j1.state.value == "PULLED" and j2.state.value == "PULLED", (j1.state, j2.state)
            blobs = p.root / ".orch" / "hub" / "blobs"
            snap2 = (blobs / j2.snapshot_sha256).stat().st_size
            data_sha = j2.data[0].sha256
            same_snapshot = j1.snapshot_sha256 == j2.snapshot_sha256
        finally:
            p.close()
            via_daemon.stop()
            via_worker.stop()
            fake.stop()

    def blob_label(name: str) -> str:
        if name == data_sha:
            return f"blob {name[:12]} (data)"
        if SHA.match(name):
            return f"blob {name[:12]} (snapshot)"
        return name

    print(f"\nBytes uploaded to Drive per job, {args.mb:.0f} MB of shared data "
          f"(data blob {data_size:,} B; snapshot blob {snap2:,} B"
          f"{', the same for both jobs' if same_snapshot else ', re-packed for job 2'})")
    for name, label in (("first", "job 1 (data not on Drive yet)"),
                        ("second", "job 2 (same data, same code)")):
        r = out[name]
        up = r["fake"]["bytes_received"]
        split = r["daemon"]["bytes_received"] + r["worker"]["bytes_received"]
        blob_up = sum(v[1] for party in ("daemon_files", "worker_files")
                      for k, v in r[party].items() if SHA.match(k))
        r["blob_up"], r["up"] = blob_up, up
        print(f"\n  {label}: submit → PULLED in {r['secs']:.1f} s")
        print(f"    uploaded {up:,} B = {up / data_size:.4f}× the data, "
              f"{up / snap2:.2f}× the snapshot   (downloaded {r['fake']['bytes_sent']:,} B)")
        if split != up:
            print(f"    (relays saw {split:,} B: the rest came from elsewhere)")
        for party in ("daemon", "worker"):
            files = r[f"{party}_files"]
            print(f"    {party}: {r[party]['bytes_received']:,} B up, "
                  f"{r[party]['bytes_sent']:,} B down, {r[party]['total_requests']} requests")
            for fname, (n, b_up, b_down) in sorted(files.items(), key=lambda kv: -kv[1][1]):
                if b_up or b_down > 100_000:
                    print(f"      {blob_label(fname):34s} {n:4d} req  {b_up:>12,} B up"
                          f"  {b_down:>12,} B down")
        print("    requests by route (all clients):")
        print_routes(r["fake"], indent="      ")

    r2 = out["second"]
    protocol = r2["up"] - r2["blob_up"]
    budget = snap2 + protocol
    ratio = r2["up"] / budget
    print(f"\n  job 2 uploaded {r2['up']:,} B: blobs {r2['blob_up']:,} B + protocol files "
          f"{protocol:,} B (manifest, inbox, heartbeats, status, log, result)")
    print(f"  job 1 uploaded {out['first']['up']:,} B "
          f"(job 2 / job 1 = {r2['up'] / out['first']['up']:.4f}×)")
    print(f"  → ratio job 2 / (snapshot {snap2:,} B + protocol {protocol:,} B) = {ratio:.2f}×: "
          f"{'meets' if ratio <= 1.0 else 'MISSES'} the goal ≤ 1")
    down2 = r2["fake"]["bytes_sent"]
    if down2 > data_size / 2:
        print(f"  note: job 2 still downloaded {down2:,} B ({down2 / data_size:.2f}× the data): "
              f"the worker fetches every blob again for each job (no blob cache on the "
              f"worker)")


if __name__ == "__main__":
    main()
