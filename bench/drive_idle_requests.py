"""Drive API requests per idle daemon tick. Goal: 1 (the ``changes.list`` that
says nothing changed).

A real daemon (`orch daemon start`) on a project whose hub is a folder on the
local fake Drive, with ``tick_interval = 1`` and ``drive_poll_interval = 1``,
measured in two idle cases after the hub's 60 s settle window (during which it
re-lists folders on purpose):

  (b) one idle Drive worker attached (`python -m orchestrator.worker --hub
      drive:…`, default heartbeat: 5 s on Drive): its heartbeat is a change the
      daemon must read. The worker talks through a counting relay, so the fake's
      totals split into the daemon's requests and the worker's.
  (a) then the worker stopped (the daemon removes its folder): nothing changes on
      Drive at all.

Requests per tick = requests per second × tick_interval (the daemon ticks once per
tick_interval when idle; a tick costs milliseconds).

Run: .venv/bin/python bench/drive_idle_requests.py [--window 20] [--settle 65]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import compile_package
from bench.drive_common import (
    CountingRelay,
    DriveProject,
    minus,
    print_routes,
    wait_for,
)
from orchestrator.store import Store

TICK = 1.0
GOAL = 1.0


def daemon_log(p: DriveProject) -> str:
    try:
        return (p.root / ".orch" / "logs" / "daemon.log").read_text(errors="replace")
    except OSError:
        return ""


def live_workers(p: DriveProject) -> list[str]:
    with Store(p.db) as store:
        return [w.id for w in store.workers()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured per case")
    parser.add_argument("--settle", type=float, default=65.0,
                        help="seconds to wait after the daemon connects (hub settle is 60 s)")
    args = parser.parse_args()
    from orchestrator.sandbox.drive import FakeDrive

    compile_package()
    fake = FakeDrive()
    relay = CountingRelay(fake.host, fake.port)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        p = DriveProject(Path(tmp) / "proj", fake, "orch-hub/bench", settings=(
            f"tick_interval = {TICK}\ndrive_poll_interval = 1\ndaemon_idle_timeout = 900\n"))
        try:
            p.orch("daemon", "start", check=True)
            wait_for(lambda: "remote hub drive:" in daemon_log(p), 30, "the daemon's Drive hub")
            connected = time.monotonic()
            worker = p.worker("idle-1", api_url=relay.url)  # default --heartbeat (5 s)
            wid = wait_for(lambda: live_workers(p), 60, "the worker to join")[0]
            print(f"daemon up, worker {wid} joined; waiting out the 60 s settle window "
                  f"({args.settle:.0f} s after connect)…", flush=True)
            time.sleep(max(0.0, connected + args.settle - time.monotonic()))

            # (b) one idle worker heartbeating
            fake.reset_stats()
            relay.reset()
            t0 = time.monotonic()
            time.sleep(args.window)
            total, by_worker = fake.stats, relay.snapshot()
            took_b = time.monotonic() - t0
            results["b"] = {"total": total, "worker": by_worker,
                            "daemon": minus(total, by_worker), "secs": took_b}

            # (a) nothing on Drive changes: stop the worker, let the daemon clean up
            p.stop_worker(worker)
            wait_for(lambda: not any(f"/workers/{wid}" in k for k in fake.paths()), 30,
                     "the daemon to remove the stopped worker's folder")
            time.sleep(3.0)
            fake.reset_stats()
            relay.reset()
            t0 = time.monotonic()
            time.sleep(args.window)
            total = fake.stats
            took_a = time.monotonic() - t0
            results["a"] = {"total": total, "daemon": total, "secs": took_a}
        finally:
            p.close()
            relay.stop()
            fake.stop()

    print(f"\nDrive API requests per idle daemon tick (tick_interval = {TICK:g} s, "
          f"drive_poll_interval = 1 s, after the settle window; {args.window:.0f} s per case)")
    ratios = {}
    for case, title in (("a", "(a) no worker: nothing changes on Drive"),
                        ("b", "(b) one idle Drive worker, heartbeat every 5 s (default)")):
        r = results[case]
        secs = r["secs"]
        per_tick = r["daemon"]["total_requests"] / secs * TICK
        ratios[case] = per_tick / GOAL
        print(f"\n  {title}")
        print(f"    daemon: {r['daemon']['total_requests']} requests in {secs:.1f} s = "
              f"{per_tick:.2f} per tick  → {per_tick / GOAL:.2f}× the goal of {GOAL:g}")
        print_routes(r["daemon"], secs, indent="      ")
        if "worker" in r:
            w = r["worker"]
            print(f"    worker (through the counting relay): {w['total_requests']} requests "
                  f"= {w['total_requests'] / secs:.2f}/s")
            print_routes(w, secs, indent="      ")
            print(f"    all clients: {r['total']['total_requests']} requests = "
                  f"{r['total']['total_requests'] / secs:.2f}/s")
    print()
    for case in ("a", "b"):
        verdict = "meets" if ratios[case] <= 1.05 else "MISSES"
        print(f"  → ({case}) {ratios[case]:.2f} requests per tick: {verdict} the goal of 1")
        r = results[case]
        extra = {k: v for k, v in r["daemon"]["requests"].items() if k != "GET /drive/v3/changes"}
        if extra:
            what = ", ".join(f"{k} {v / r['secs'] * TICK:.2f}/tick" for k, v in extra.items())
            print(f"      beyond the changes feed: {what}"
                  + ("  (the daemon downloads each new heartbeat: one per 5 s beat)"
                     if case == "b" and all("alt=media" in k for k in extra) else ""))


if __name__ == "__main__":
    main()
