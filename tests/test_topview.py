"""The layout of `orch top` (orchestrator/topview.py) on rich's test console: every
frame fits the terminal it is drawn for, the most relevant rows come first, a
"+N more" line counts the rest, ended jobs have no ETA, late heartbeats show.
(The real terminal, keys included, is tested in tmux: tests/test_top.py.)"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import pytest

from orchestrator.models import JobState
from orchestrator.topview import View, frame_lines, ordered, silence
from tests.conftest import job, worker

S = JobState
NOW = 10_000.0


def made(name: str, state: JobState, seq: int, **kw: Any) -> Any:
    progress = {"epochs": 10, "epoch": 2, "completed_epochs": 3, "eta_s": 70.0,
                "metrics": {"loss": 0.25, "val_accuracy": 0.9}} if state is S.RUNNING else {}
    return dataclasses.replace(job(name), id=f"{seq:08x}", seq=seq, state=state,
                               progress=progress, started_at=NOW - 60 if state is not S.QUEUED
                               else None, finished_at=NOW - 100 + seq if state in (
                                   S.PULLED, S.FAILED, S.CANCELLED) else None, **kw)


def many() -> list[Any]:
    states = [S.PULLED, S.RUNNING, S.QUEUED, S.CANCELLED, S.RUNNING, S.FAILED] * 6
    return [made(f"job-{i}-with-a-rather-long-name", st, i + 1,
                 worker_id="local-cpu0-abcdef" if st is S.RUNNING else None)
            for i, st in enumerate(states)]


def wk(wid: str, last_seen: float, **kw: Any) -> Any:
    return dataclasses.replace(worker(wid, **kw), last_seen=last_seen)


def draw(view: View, width: int, height: int) -> list[str]:
    from rich.console import Console, Group

    console = Console(file=io.StringIO(), width=width, height=height, record=True,
                      color_system=None, legacy_windows=False)
    console.print(Group(*frame_lines(view, width, height)))
    return console.export_text().rstrip("\n").split("\n")


@pytest.mark.parametrize("width,height", [(80, 24), (160, 40), (60, 12), (100, 30)])
def test_frames_fit_and_put_running_jobs_first(width: int, height: int) -> None:
    jobs = many()
    workers = [wk(f"w{i}", NOW - 1, gpu="T4" if i == 0 else None,
                      heartbeat_interval=1.0) for i in range(6)]
    counts: dict[JobState, int] = {}
    for j in jobs:
        counts[j.state] = counts.get(j.state, 0) + 1
    counts[S.PULLED] += 500  # older jobs the overview did not read
    lines = draw(View(title="orch top", jobs=jobs, workers=workers, counts=counts,
                      footer="q quit", now=NOW), width, height)
    assert len(lines) <= height and all(len(ln) <= width for ln in lines), lines
    rows = [ln for ln in lines if ln[:8].isalnum() and ln[:8] != "ID      "]
    states = [next(s for s in ("RUNNING", "QUEUED", "PULLED", "FAILED", "CANCELLED")
                   if s in ln) for ln in rows if "job-" in ln]
    assert states[: min(len(states), 12)] == ["RUNNING"] * min(len(states), 12)
    more = next(ln for ln in lines if ln.startswith("+"))
    assert "ended" in more and "(orch status --all)"[: width - len(more)] in more
    assert lines[-1] == "q quit"
    header = next(ln for ln in lines if ln.startswith("ID"))
    assert ("METRICS" in header) == (width >= 100)
    assert ("ELAPSED" in header) == (width >= 120)


def test_ended_jobs_show_no_eta_and_silent_workers_say_so() -> None:
    jobs = [made("fit", S.RUNNING, 1, worker_id="w1"), made("old", S.PULLED, 2),
            made("stop", S.CANCELLED, 3), made("bad", S.FAILED, 4)]
    workers = [wk("w1", NOW - 40, heartbeat_interval=1.0)]
    silent = {"w1": 40.0}
    lines = draw(View(title="t", jobs=jobs, workers=workers, silent=silent, now=NOW), 80, 24)
    fit = next(ln for ln in lines if "fit" in ln)
    assert "RUNNING silent 40 s" in fit and fit.rstrip().endswith("1m10s")
    assert next(ln for ln in lines if " old " in ln).rstrip().endswith("done")
    assert next(ln for ln in lines if " stop " in ln).rstrip().endswith("CANCELLED")
    assert next(ln for ln in lines if " bad " in ln).rstrip().endswith("FAILED")
    assert lines[-1].rstrip().endswith("silent 40 s")  # the workers panel's HEARTBEAT


def test_silence_waits_for_a_clearly_late_heartbeat() -> None:
    w = wk("w", NOW - 2.5, heartbeat_interval=0.2)
    assert silence(w, NOW, tick=0.2, hub_lag=4.0) is None  # never before 3 s
    assert silence(w, NOW + 1, tick=0.2, hub_lag=4.0) == pytest.approx(3.5)
    slow = wk("c", NOW - 18, kind="colab", hub="drive", heartbeat_interval=5.0)
    assert silence(slow, NOW, tick=1.0, hub_lag=4.0) is None  # 3 beats + Drive's lag
    assert silence(slow, NOW + 2, tick=1.0, hub_lag=4.0) == pytest.approx(20.0)


def test_order_running_then_queued_by_priority_then_newest_ended() -> None:
    jobs = [made("e1", S.PULLED, 1), made("q1", S.QUEUED, 2), made("r", S.RUNNING, 3),
            made("e2", S.FAILED, 4), dataclasses.replace(made("q2", S.QUEUED, 5), priority=5)]
    assert [j.name for j in ordered(jobs)] == ["r", "q2", "q1", "e2", "e1"]


def test_workers_panel_shows_place_gpu_session_left_and_heartbeat_age() -> None:
    workers = [wk("colab-t4-1", NOW - 60, kind="colab", hub="drive", gpu="T4",
                  session_left=3600.0, heartbeat_interval=5.0),
               wk("local-cpu0", NOW - 1, heartbeat_interval=1.0)]
    lines = draw(View(title="t", jobs=[], workers=workers, now=NOW), 80, 24)
    colab = next(ln for ln in lines if ln.startswith("colab-t4-1"))
    assert colab.split() == ["colab-t4-1", "colab", "T4", "idle", "59m00s", "60", "s", "ago"]
    local = next(ln for ln in lines if ln.startswith("local-cpu0"))
    assert local.split() == ["local-cpu0", "local", "-", "idle", "-", "1", "s", "ago"]
