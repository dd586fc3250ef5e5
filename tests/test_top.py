"""`orch top` in a real terminal (tmux) at 80x24 and 160x40, against a real
project: a daemon, local workers, jobs queued, running (reporting progress),
finished and cancelled, and a worker stopped with SIGSTOP so its heartbeat goes
late. The keys are pressed as a user would (q, j/k, c then y, l)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.models import JobState
from orchestrator.store import Store
from tests.conftest import kill_processes_of, orch_env, read_job, run_orch, wait_for
from tests.tmux import PROMPT

S = JobState
ORCH_TOP = f"{shlex.quote(sys.executable)} -m orchestrator top"

SETTINGS = """\
heartbeat_interval = 0.2
lease_ttl = 120
tick_interval = 0.2
daemon_idle_timeout = 60
worker_idle_timeout = 60
local_slots = 2
gpus = "none"
"""

# A job that reports progress the way orch's Keras callback does (progress.json in
# $ORCH_RUN_DIR), without TensorFlow's start-up time: EPOCHS epochs of SECONDS each.
PROGRESS_SCRIPT = """\
import json, os, pathlib, sys, time
epochs, seconds = int(sys.argv[1]), float(sys.argv[2])
run = pathlib.Path(os.environ["ORCH_RUN_DIR"])
start = time.time()
for e in range(epochs):
    print(f"epoch {e + 1}/{epochs} training", flush=True)
    time.sleep(seconds)
    done = e + 1
    state = {"epochs": epochs, "epoch": e, "completed_epochs": done, "batch": 1,
             "batches": 1, "metrics": {"loss": round(1 / done, 4), "val_accuracy": 0.5},
             "eta_s": round((time.time() - start) / done * (epochs - done), 1)}
    (run / "progress.tmp").write_text(json.dumps(state))
    (run / "progress.tmp").rename(run / "progress.json")
(pathlib.Path(os.environ["ORCH_OUTPUT_DIR"]) / "model.bin").write_bytes(b"weights")
print("saved model.bin", flush=True)
"""


@pytest.fixture
def busy(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A project with jobs in every state `orch top` shows: ``done`` (PULLED),
    ``gone`` (CANCELLED), ``train-a`` and ``train-b`` running with progress,
    ``waiting`` queued behind them; ``train-b``'s worker is stopped (SIGSTOP), so
    its heartbeat is late (the lease, 120 s, is far off). Yields the ids by name
    and the project's root."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "orch.toml").write_text(SETTINGS)
    (root / "prog.py").write_text(PROGRESS_SCRIPT)
    stopped: list[int] = []

    def submit(name: str, *args: str) -> str:
        out = run_orch(root, "submit", "prog.py", "--name", name, "--", *args, check=True)
        return out.stdout.split()[0]

    try:
        ids = {"done": submit("done", "1", "0.1")}
        wait_for(lambda: read_job(root, ids["done"]).state is S.PULLED, 30, message="done pulled")
        ids["train-a"] = submit("train-a", "200", "1")
        ids["train-b"] = submit("train-b", "200", "1")
        ids["gone"] = submit("gone", "200", "1")  # queued behind the two: cancelled at once
        run_orch(root, "cancel", ids["gone"], check=True)
        ids["waiting"] = submit("waiting", "5", "0.2")

        def running_with_progress() -> bool:
            jobs = [read_job(root, ids[n]) for n in ("train-a", "train-b")]
            return all(j.state is S.RUNNING and j.progress.get("completed_epochs") for j in jobs)

        wait_for(running_with_progress, 40, message="train-a and train-b reporting progress")
        with Store(root / ".orch" / "state.db") as store:
            worker = next(w for w in store.workers() if w.job_id == ids["train-b"])
        assert worker.pid
        os.kill(worker.pid, signal.SIGSTOP)
        stopped.append(worker.pid)
        yield {"root": root, "ids": ids}
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        kill_processes_of(root)


def row_of(screen: str, job_id: str) -> str:
    rows = [ln for ln in screen.splitlines() if ln.startswith(job_id)]
    assert rows, f"no row for {job_id} in:\n{screen}"
    return rows[0]


def start_top(tmux: Any, root: Path, width: int, height: int,
              env: dict[str, str] | None = None) -> str:
    """Open `orch top` in a fresh terminal of ``width`` x ``height``; the screen
    once a worker shows as silent."""
    tmux.start(width, height, root, orch_env(env))
    tmux.type(ORCH_TOP)
    return tmux.wait(lambda s: "silent" in s and "HEARTBEAT" in s, 30,
                     "orch top showing the silent worker")


def fits(screen: str, width: int, height: int) -> None:
    lines = screen.splitlines()
    assert len(lines) <= height
    assert all(len(ln) <= width for ln in lines), [ln for ln in lines if len(ln) > width]


def test_top_at_80x24_with_keys(busy: dict[str, Any], tmux: Any) -> None:
    root, ids = busy["root"], busy["ids"]
    screen = start_top(tmux, root, 80, 24)
    fits(screen, 80, 24)
    header = next(ln for ln in screen.splitlines() if ln.startswith("ID "))
    assert header.split() == ["ID", "NAME", "PLACE", "STATE", "PROGRESS", "ETA"]
    assert re.search(r"RUNNING\s+ep \d+/200 \d+%\s+\d+m\d\ds$", row_of(screen, ids["train-a"]))
    assert "silent" in row_of(screen, ids["train-b"])
    assert "silent" not in row_of(screen, ids["train-a"])
    assert re.search(r"PULLED\s+done$", row_of(screen, ids["done"]))  # no ETA
    assert row_of(screen, ids["gone"]).rstrip().endswith("CANCELLED")  # no ETA
    assert "QUEUED" in row_of(screen, ids["waiting"])
    # the workers panel: the stopped worker's heartbeat is late, the other's is not
    panel = screen[screen.index("WORKER"):]
    assert re.search(r"local\s+-\s+\S+\s+-\s+silent \d+ s", panel)
    assert re.search(r"\d+ s ago", panel)

    # rows: train-a, train-b (on workers), waiting (queued), then the ended ones
    tmux.keys("Down", "j", "c")
    tmux.wait(lambda s: f"cancel {ids['waiting']} waiting? y/n" in s, 10, "the question")
    tmux.keys("y")
    wait_for(lambda: read_job(root, ids["waiting"]).state is S.CANCELLED, 10,
             message="the job cancelled from top")
    tmux.wait(lambda s: re.search(rf"{ids['waiting']} waiting: CANCELLED", s), 10,
              "the line about the cancelled job")

    tmux.keys("k", "Up", "l")  # train-a's log, as it grows
    screen = tmux.wait(lambda s: "--- log of" in s and "training" in s, 15, "the log")
    assert re.search(r"epoch \d+/200 training", screen)
    tmux.keys("q")
    tmux.wait(lambda s: "q quit" in s and "HEARTBEAT" in s, 10, "back in orch top")
    tmux.keys("q")
    screen = tmux.wait(lambda s: s.rstrip().endswith(PROMPT.strip()), 10, "the shell's prompt")
    assert "Traceback" not in screen
    tmux.type("stty -a | grep -o ' icanon'; echo $?")  # the terminal was restored
    tmux.wait(lambda s: " icanon" in s, 10, "canonical mode again")

    tmux.type(f"clear; {ORCH_TOP} < /dev/null")  # no keys without a terminal on stdin
    screen = tmux.wait(lambda s: "Ctrl-C to leave" in s and "HEARTBEAT" in s, 15, "top, no keys")
    fits(screen, 80, 24)
    tmux.keys("C-c")
    screen = tmux.wait(lambda s: s.rstrip().endswith(PROMPT.strip()), 10, "the prompt again")
    assert "Traceback" not in screen
    tmux.type(f"clear; {ORCH_TOP} < /dev/null")  # killed without keys: the screen comes back
    tmux.wait(lambda s: "Ctrl-C to leave" in s, 15, "top, no keys, again")
    assert tmux.cmd("display-message", "-p", "#{alternate_on}").strip() == "1"
    os.kill(tmux.foreground_pid(), signal.SIGTERM)
    tmux.wait(lambda s: s.rstrip().endswith(PROMPT.strip()), 10, "the prompt after SIGTERM")
    assert tmux.cmd("display-message", "-p", "#{alternate_on} #{cursor_flag}").split() == \
        ["0", "1"]  # the normal screen, the cursor shown


def test_top_at_160x40_shows_everything_and_notifies(busy: dict[str, Any], tmux: Any,
                                                      tmp_path: Path) -> None:
    root, ids = busy["root"], busy["ids"]
    calls = tmp_path / "notify-calls.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "notify-send").write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    (bin_dir / "notify-send").chmod(0o755)
    raw = tmp_path / "pane.raw"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "ORCH_NOTIFY": "true"}
    tmux.start(160, 40, root, orch_env(env))
    tmux.record(raw)
    tmux.type(ORCH_TOP)
    screen = tmux.wait(lambda s: "silent" in s and "METRICS" in s, 30, "the wide layout")
    fits(screen, 160, 40)
    header = next(ln for ln in screen.splitlines() if ln.startswith("ID "))
    assert header.split() == ["ID", "NAME", "PLACE", "STATE", "PROGRESS", "ETA", "METRICS",
                              "ELAPSED"]
    assert "loss=" in row_of(screen, ids["train-a"])
    assert "silent" in row_of(screen, ids["train-b"])
    assert not calls.exists()  # what ended before top opened is not announced

    quick = run_orch(root, "submit", "prog.py", "--name", "quick", "--", "1", "0.1",
                     check=True).stdout.split()[0]
    # its place: the worker train-a frees, or a new one (the stopped worker's slot is
    # held); the end shows in the message area, once, with the bell and the notifier
    run_orch(root, "cancel", ids["train-a"], check=True)
    screen = tmux.wait(lambda s: f"{quick} quick: PULLED" in s, 40, "the line about quick")
    wait_for(lambda: calls.exists() and "quick" in calls.read_text()
             and "train-a CANCELLED" in calls.read_text(), 10,
             message="notify-send called for both ends (it is not waited for)")
    lines = calls.read_text().splitlines()
    about_quick = [ln for ln in lines if "quick" in ln]
    assert len(about_quick) == 1 and "PULLED" in about_quick[0]
    assert any("train-a CANCELLED" in ln for ln in lines)
    wait_for(lambda: b"\a" in raw.read_bytes(), 10, message="the bell in the pane")
    fits(screen, 160, 40)
    os.kill(tmux.foreground_pid(), signal.SIGTERM)  # killed, it still restores the terminal
    tmux.wait(lambda s: s.rstrip().endswith(PROMPT.strip()), 10, "the shell's prompt")
    tmux.type("echo exit=$?; stty -a | grep -o ' icanon'")
    screen = tmux.wait(lambda s: " icanon" in s, 10, "canonical mode again")
    assert "exit=143" in screen and "Traceback" not in screen
