"""Being told: a line per job as it ends under `orch submit --wait` (plain and on a
terminal), and with `notify = true` the bell and the desktop notifier (a stand-in
`notify-send` on PATH that records its arguments); with notify off, neither."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.models import JobState
from orchestrator.notify import EndWatch, Notifier, desktop_command, ended_line, has_ended
from tests.conftest import job, run_orch, wait_for
from tests.tmux import PROMPT

S = JobState

QUICK = """\
import argparse, os, pathlib
p = argparse.ArgumentParser()
p.add_argument("--n", type=int, default=1)
a = p.parse_args()
if a.n < 0:
    raise SystemExit("negative n")
(pathlib.Path(os.environ["ORCH_OUTPUT_DIR"]) / "model.bin").write_bytes(b"w" * a.n)
print("saved", a.n)
"""


@pytest.fixture
def notify_send(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A stand-in `notify-send` first on PATH, appending its arguments (one call a
    line, in one write: two calls may run at once) to the file returned; the
    environment that puts it there. orch does not wait for it: read with `calls_of`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "notify-calls.txt"
    script = bin_dir / "notify-send"
    script.write_text(f'#!/bin/sh\nline=$(printf "%s|" "$@")\n'
                      f'printf "%s\\n" "$line" >> "{calls}"\n')
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, calls


def calls_of(calls: Path, count: int) -> list[str]:
    """The stand-in's ``count`` calls, once all are written (it is not waited for)."""
    wait_for(lambda: calls.exists() and len(calls.read_text().splitlines()) >= count,
             timeout=15, message=f"{count} notify-send call(s)")
    return calls.read_text().splitlines()


def test_wait_tells_each_end_and_notifies(project_dir: Path, notify_send: Any) -> None:
    env, calls = notify_send
    (project_dir / "quick.py").write_text(QUICK)
    proc = run_orch(project_dir, "submit", "--wait", "--sweep", "n=1,2", "quick.py",
                    env={**env, "ORCH_NOTIFY": "1"})
    assert proc.returncode == 0, proc.stderr
    # each bell follows its end's line, so it may open the next line: lines are read without it
    text = proc.stderr.replace("\a", "")
    ended = re.findall(r"^\w{8} quick_n=\d: PULLED after \d+s → \S+$", text, re.M)
    assert len(ended) == 2, proc.stderr
    assert proc.stderr.count("\a") == 2
    lines = calls_of(calls, 2)
    assert sorted(ln.split("|")[0] for ln in lines) == ["orch: quick_n=1 PULLED",
                                                         "orch: quick_n=2 PULLED"]
    assert all("PULLED after" in ln.split("|")[1] for ln in lines)


def test_wait_without_notify_rings_nothing(project_dir: Path, notify_send: Any) -> None:
    env, calls = notify_send
    (project_dir / "quick.py").write_text(QUICK)
    proc = run_orch(project_dir, "submit", "--wait", "quick.py", "--", "--n", "-1", env=env)
    assert proc.returncode == 1
    assert re.search(r"^\w{8} quick: FAILED after \d+s: ", proc.stderr, re.M), proc.stderr
    assert "\a" not in proc.stderr
    assert not calls.exists()


def test_wait_on_a_terminal_tells_the_end(project_dir: Path, notify_send: Any,
                                          tmux: Any, tmp_path: Path) -> None:
    """The progress bars' path (stderr a terminal): the line above the bars, the
    bell in what the terminal received, the notifier called once."""
    from tests.conftest import orch_env

    env, calls = notify_send
    (project_dir / "quick.py").write_text(QUICK)
    tmux.start(80, 24, project_dir, orch_env({**env, "ORCH_NOTIFY": "yes"}))
    raw = tmp_path / "pane.raw"
    tmux.record(raw)
    tmux.type(f"{shlex.quote(sys.executable)} -m orchestrator submit --wait quick.py")
    screen = tmux.wait(lambda s: s.rstrip().endswith(PROMPT.strip()) and "PULLED after" in s,
                       60, "the job's end and the prompt")
    assert re.search(r"^\w{8} quick: PULLED after \d+s → models/quick/model.bin$", screen, re.M)
    assert all(len(ln) <= 80 for ln in screen.splitlines())
    wait_for(lambda: b"\a" in raw.read_bytes(), timeout=10, message="the bell in the pane")
    assert len(calls_of(calls, 1)) == 1


def ended(name: str, state: JobState, attempt: int = 1, **kw: Any) -> Any:
    import dataclasses

    return dataclasses.replace(job(name), state=state, attempt=attempt, started_at=100.0,
                               finished_at=165.0, **kw)


def test_end_watch_tells_each_attempt_once() -> None:
    before = [ended("old", S.PULLED)]
    watch = EndWatch(auto_pull=True, before=before)
    running = [ended("a", S.RUNNING), ended("b", S.SUCCEEDED)]  # b: to be pulled
    assert watch.ended(before + running) == []
    assert [j.id for j in watch.ended([ended("a", S.FAILED, error="boom")])] == ["a"]
    assert watch.ended([ended("a", S.FAILED)]) == []  # told once
    assert [j.id for j in watch.ended([ended("a", S.CANCELLED, attempt=2)])] == ["a"]
    # auto-pull off: a sealed result is the end; a failed pull too
    assert has_ended(ended("b", S.SUCCEEDED), auto_pull=False)
    assert has_ended(ended("b", S.SUCCEEDED, pull_error="disk full"), auto_pull=True)
    assert ended_line(ended("a", S.FAILED, error="boom")) == "a a: FAILED after 1m05s: boom"
    assert ended_line(ended("m", S.PULLED, pulled_to=("models/m/x.h5",), attempt=2)) == \
        "m m: PULLED (try 2) after 1m05s → models/m/x.h5"


def test_notifier_off_or_absent_does_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    import io

    monkeypatch.setenv("PATH", str(tmp_path))  # no notify-send, no osascript
    assert desktop_command("t", "m") is None
    term = io.StringIO()
    Notifier(True, term).tell(ended("a", S.PULLED))  # no notifier: no error
    assert term.getvalue() == "\a"
    quiet = io.StringIO()
    Notifier(False, quiet).tell(ended("a", S.PULLED))
    assert quiet.getvalue() == ""
