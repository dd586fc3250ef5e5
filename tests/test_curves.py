"""Learning curves end to end: real TensorFlow runs through the real CLI, daemon and
workers write TensorBoard logs and history.jsonl, the pull brings them beside the
model, and `orch compare` / `orch tensorboard` read them."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.models import JobState

from .conftest import (
    FAST_SETTINGS,
    REPO,
    TINY_KERAS_SCRIPT,
    kill_processes_of,
    orch_env,
    read_job,
    run_orch,
    wait_for,
    write,
)
from .test_worker import _imports

S = JobState

#: The tiny job, with a validation split and a --units knob for a sweep.
CURVES_SCRIPT = TINY_KERAS_SCRIPT.replace(
    'p.add_argument("--out", default="model.keras")',
    'p.add_argument("--out", default="model.keras")\n'
    'p.add_argument("--units", type=int, default=8)').replace(
    "keras.layers.Dense(8, activation", "keras.layers.Dense(a.units, activation").replace(
    "epochs=a.epochs,", "epochs=a.epochs, validation_split=0.25,")
#: An exam script that knows nothing of orch and saves mymodel.h5 in its working dir.
PLAIN_SCRIPT = """\
import numpy as np
import keras
x = np.random.default_rng(1).normal(size=(64, 4)).astype("float32")
y = (x[:, 0] > 0).astype("float32")
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
model.fit(x, y, epochs=2, verbose=0)
model.save("mymodel.h5")
"""
SWEEP = ("train_units=4", "train_units=8")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Trained:
    """A project where a sweep of two jobs (orch's callbacks), one --auto-track job
    with --output, and one job that keeps no history have run and been pulled."""

    root: Path
    sweep_ids: tuple[str, ...]
    auto_id: str
    nolog_id: str


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    root = tmp_path_factory.mktemp("curves") / "proj"
    root.mkdir()
    write(root, "orch.toml", FAST_SETTINGS)
    write(root, "train.py", CURVES_SCRIPT)
    write(root, "exam.py", PLAIN_SCRIPT)
    write(root, "nolog.py", "import os, pathlib\n"
          "pathlib.Path(os.environ['ORCH_OUTPUT_DIR'], 'model.keras').write_text('x')\n")
    try:
        sweep = run_orch(root, "submit", "train.py", "--sweep", "units=4,8", "--wait", "--",
                         "--epochs", "4", check=True).stdout.split()
        auto = run_orch(root, "submit", "exam.py", "--name", "auto", "--auto-track",
                        "--output", "mymodel.h5:.", "--wait", check=True).stdout.split()[0]
        nolog = run_orch(root, "submit", "nolog.py", "--wait", check=True).stdout.split()[0]
        yield Trained(root, tuple(sweep), auto, nolog)
    finally:
        run_orch(root, "daemon", "stop")
        kill_processes_of(root)


def history(root: Path, name: str) -> list[dict[str, float]]:
    path = root / "models" / name / "logs" / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def event_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("events.out.tfevents.*"))


# ---- what a run writes, and the pull brings back ------------------------------------


def test_orch_callbacks_bring_tensorboard_logs_and_history_beside_the_model(
        trained: Trained) -> None:
    for name, job_id in zip(SWEEP, trained.sweep_ids):
        logs = trained.root / "models" / name / "logs"
        assert (logs.parent / "model.keras").is_file()
        assert event_files(logs / "train") and event_files(logs / "validation"), \
            sorted(logs.rglob("*"))
        rows = history(trained.root, name)
        assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
        assert all({"loss", "accuracy", "val_loss", "val_accuracy", "time"} <= set(r)
                   for r in rows)
        assert f"models/{name}/logs" in read_job(trained.root, job_id).pulled_to


def test_auto_track_logs_come_back_even_with_an_output_elsewhere(trained: Trained) -> None:
    job = read_job(trained.root, trained.auto_id)
    assert job.state is S.PULLED
    assert (trained.root / "mymodel.h5").is_file()  # --output mymodel.h5:. as asked
    logs = trained.root / "models" / "auto" / "logs"
    assert event_files(logs / "train")
    assert [r["epoch"] for r in history(trained.root, "auto")] == [0, 1]
    assert set(job.pulled_to) == {"mymodel.h5", "models/auto/logs"}


def run_here(folder: Path, script: str, *args: str) -> tuple[subprocess.CompletedProcess[str],
                                                             Path]:
    """Run ``script`` as a worker would (the ORCH_* folders set), without orch around
    it; the process and its output dir."""
    write(folder, "train.py", script)
    dirs = {k: folder / k for k in ("out", "run", "ckpt")}
    for path in dirs.values():
        path.mkdir()
    env = orch_env({"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2",
                    "CUDA_VISIBLE_DEVICES": "", "ORCH_OUTPUT_DIR": str(dirs["out"]),
                    "ORCH_RUN_DIR": str(dirs["run"]), "ORCH_CHECKPOINT_DIR": str(dirs["ckpt"])})
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc, dirs["out"]


def test_training_goes_on_without_a_tensorboard_writer(tmp_path: Path) -> None:
    """No ``tensorflow.summary`` in the job's process: one warning line, the history
    still written, the model still saved."""
    proc, out = run_here(tmp_path, CURVES_SCRIPT.replace(
        "import keras\n", "import keras, sys\nsys.modules['tensorflow.summary'] = None\n", 1),
        "--epochs", "2")
    warnings = [line for line in proc.stderr.splitlines() if "TensorBoard logs are off" in line]
    assert len(warnings) == 1 and "no TensorBoard writer" in warnings[0], proc.stderr
    assert (out / "model.keras").is_file()
    rows = (out / "logs" / "history.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [0, 1]
    assert event_files(out) == []


def test_a_second_fit_writes_its_own_logs(tmp_path: Path) -> None:
    script = CURVES_SCRIPT.replace(
        "model.save(", "model.fit(x, y, epochs=3, verbose=0, callbacks=callbacks())\n"
        "model.save(", 1)
    _, out = run_here(tmp_path, script, "--epochs", "2")
    first = [json.loads(r) for r in (out / "logs" / "history.jsonl").read_text().splitlines()]
    second = [json.loads(r) for r in
              (out / "logs" / "fit-1" / "history.jsonl").read_text().splitlines()]
    assert [(r["fit"], r["epoch"]) for r in first] == [(0, 0), (0, 1)]
    assert [(r["fit"], r["epoch"]) for r in second] == [(1, 0), (1, 1), (1, 2)]
    assert "val_loss" in first[0] and "val_loss" not in second[0]
    assert event_files(out / "logs" / "fit-1" / "train")
    assert not event_files(out / "logs" / "fit-1" / "validation")


def test_history_lines_of_a_resumed_run_replace_the_epochs_trained_again(
        tmp_path: Path) -> None:
    from orchestrator.curvelogs import keep_history
    from orchestrator.curves import merge, parse_lines

    attempt1 = [{"epoch": e, "loss": 1.0 - e / 10} for e in range(4)]  # killed after 3
    attempt2 = [{"epoch": e, "loss": 0.5 - e / 100} for e in range(2, 5)]  # resumed at 2
    text = "\n".join(json.dumps(r) for r in attempt1) + '\n{"epoch": 4, "lo'  # cut short
    text += "\n" + "\n".join(json.dumps(r) for r in attempt2) + "\n"
    rows = merge(parse_lines(text))
    assert [(r["epoch"], r["loss"]) for r in rows] == [
        (0, 1.0), (1, 0.9), (2, 0.48), (3, 0.47), (4, 0.46)]
    path = write(tmp_path, "history.jsonl", text)
    keep_history(path, fit=0, start=2)  # what a resumed run does before training
    assert [json.loads(r)["epoch"] for r in path.read_text().splitlines()] == [0, 1]
    keep_history(path, fit=1, start=0)  # another fit's lines stay
    assert [json.loads(r)["epoch"] for r in path.read_text().splitlines()] == [0, 1]


# ---- orch compare -------------------------------------------------------------------


def compare(root: Path, *args: str, columns: int = 100) -> subprocess.CompletedProcess[str]:
    return run_orch(root, "compare", *args, env={"COLUMNS": str(columns)})


def row_of(out: str, job_id: str) -> str:
    return next(line for line in out.splitlines() if f"({job_id})" in line
                and not line.lstrip().startswith(("●", "▲")))


def test_compare_prints_best_and_final_of_each_job(trained: Trained) -> None:
    a, b = trained.sweep_ids
    proc = compare(trained.root, a, b, columns=200)  # wide: one table, no wrapping
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0]
    assert "val_loss (min is best)" in header and "val_accuracy (max is best)" in header
    metrics = re.findall(r"(\w+) \((?:min|max) is best\)", header)
    for name, job_id in zip(SWEEP, (a, b)):
        rows = history(trained.root, name)
        cells = re.findall(r"(\S+) @(\d+)\s+(\S+)", row_of(proc.stdout, job_id))
        assert len(cells) == len(metrics) == 4, proc.stdout
        for metric, (best, at, final) in zip(metrics, cells):
            values = [r[metric] for r in rows]
            want = max(values) if "accuracy" in metric else min(values)
            assert best == f"{want:.4g}", (metric, proc.stdout)
            assert int(at) == values.index(want) + 1
            assert final == f"{values[-1]:.4g}"
        assert f"{name} ({job_id})  4 " in row_of(proc.stdout, job_id)


def plot_lines(out: str) -> list[str]:
    """The plot: from its first y label to the legend's last line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^\s*\S+ ┤", line))
    return lines[start:]


@pytest.mark.parametrize("columns", [60, 120])
def test_compare_draws_the_curves_to_the_terminal_width(trained: Trained,
                                                         columns: int) -> None:
    a, b = trained.sweep_ids
    proc = compare(trained.root, a, b, columns=columns)
    assert proc.returncode == 0, proc.stderr
    lines = plot_lines(proc.stdout)
    assert {len(line) for line in lines} == {columns}, lines
    assert all(len(line) <= columns for line in proc.stdout.splitlines())
    values = [r["val_loss"] for n in SWEEP for r in history(trained.root, n)]
    assert lines[0].split()[0] == f"{max(values):.4g}"  # top of the y axis
    bottom = next(line for line in lines if "└" in line)
    assert lines[lines.index(bottom) - 1].split()[0] == f"{min(values):.4g}"
    assert "epoch · val_loss" in lines[lines.index(bottom) + 1]
    legend = " ".join(lines[lines.index(bottom) + 2:])
    assert f"● {SWEEP[0]} ({a})" in legend and f"▲ {SWEEP[1]} ({b})" in legend
    plot_area = "".join(lines[:lines.index(bottom)])
    assert "●" in plot_area and "▲" in plot_area


def test_compare_a_sweep_by_name_or_by_one_of_its_jobs(trained: Trained) -> None:
    by_name = compare(trained.root, "train")
    assert by_name.returncode == 0, by_name.stderr
    for job_id in trained.sweep_ids:
        assert f"({job_id})" in by_name.stdout
    by_job = compare(trained.root, f"sweep:{trained.sweep_ids[1]}")
    assert by_job.returncode == 0 and by_job.stdout == by_name.stdout
    alone = compare(trained.root, "sweep:auto")
    assert alone.returncode == 2 and "is not part of a sweep" in alone.stderr


def test_compare_metric_and_png(trained: Trained, tmp_path: Path) -> None:
    png = tmp_path / "curves.png"
    proc = compare(trained.root, "train", "auto", "--metric", "accuracy", "--png", str(png))
    assert proc.returncode == 0, proc.stderr
    assert "epoch · accuracy" in proc.stdout and f"({trained.auto_id})" in proc.stdout
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (800, 450)
    assert f"saved the curves of accuracy in {png}" in proc.stderr


def test_compare_reads_no_tensorflow_or_matplotlib(trained: Trained) -> None:
    heavy, third = _imports(trained.root, "orchestrator",
                            ["orch", "compare", trained.sweep_ids[0]])
    assert heavy == "" and "matplotlib" not in third and "tensorboard" not in third


@pytest.mark.parametrize(("args", "code", "line"), [
    (("nosuchjob",), 2, "orch: error: no job or sweep matches 'nosuchjob' (by id, id "
                        "prefix, job name or sweep name)"),
    (("train", "--metric", "f2"), 2, "orch: error: unknown metric 'f2': the runs have "
                                     "accuracy, loss, val_accuracy, val_loss"),
    (("nolog",), 1, "orch: error: nothing to compare: no learning curve for nolog"),
    (("train", "--png", "/nonexistent/c.png"), 2,
     "orch: error: cannot write --png /nonexistent/c.png: folder /nonexistent does not exist"),
    (("train", "--png", "/"), 2,
     "orch: error: cannot write --png /: it is a folder; name a file, e.g. /curves.png"),
])
def test_compare_errors_are_one_line(trained: Trained, args: tuple[str, ...], code: int,
                                     line: str) -> None:
    proc = compare(trained.root, *args)
    assert proc.returncode == code
    assert proc.stderr.splitlines()[-1] == line, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_compare_names_a_job_without_a_curve_and_shows_the_others(trained: Trained) -> None:
    proc = compare(trained.root, trained.sweep_ids[0], "nolog")
    assert proc.returncode == 0, proc.stderr
    assert f"nolog ({trained.nolog_id}): no learning curve" in proc.stderr
    assert f"({trained.sweep_ids[0]})" in proc.stdout and "nolog" not in proc.stdout


def test_compare_a_running_job_from_its_hub_metrics(project_dir: Path) -> None:
    write(project_dir, "train.py", CURVES_SCRIPT)
    write(project_dir, "idle.py", "import time\ntime.sleep(120)\n")
    idle = run_orch(project_dir, "submit", "idle.py", check=True).stdout.split()[0]
    wait_for(lambda: read_job(project_dir, idle).state is S.RUNNING, timeout=60,
             message="the idle job running")
    proc = run_orch(project_dir, "compare", "idle")
    assert proc.returncode == 1
    assert f"idle ({idle}): no curve yet (running)" in proc.stderr
    run_orch(project_dir, "cancel", idle, check=True)
    slow = run_orch(project_dir, "submit", "train.py", "--name", "slow", "--",
                    "--epochs", "60", "--sleep", "0.5", check=True).stdout.split()[0]

    def curve_so_far() -> str | None:
        out = run_orch(project_dir, "compare", "slow").stdout
        return out if re.search(r"slow \(\w+\)\s+[2-9]\d*\s", out) else None

    out = wait_for(curve_so_far, timeout=180, interval=1.0, message="two epochs on the hub")
    said = run_orch(project_dir, "compare", "slow").stderr
    assert f"slow ({slow}): running, its curve so far (from the metrics on hub local)" in said
    assert read_job(project_dir, slow).state is S.RUNNING
    assert "epoch · val_loss" in out
    run_orch(project_dir, "cancel", slow, check=True)


# ---- orch tensorboard ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tensorboard_serves_every_pulled_run(trained: Trained, tmp_path: Path) -> None:
    port = free_port()
    said = tmp_path / "tensorboard.txt"
    with open(said, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "tensorboard",
                                 "--port", str(port)], cwd=trained.root, env=orch_env(),
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def runs() -> set[str] | None:
        if proc.poll() is not None:
            raise AssertionError(f"orch tensorboard exited {proc.returncode}: "
                                 f"{said.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5) as r:
                got = set(json.load(r))
        except OSError:
            return None
        return got if {f"{SWEEP[0]}/train", f"{SWEEP[1]}/validation"} <= got else None

    try:
        served = wait_for(runs, timeout=180, interval=0.5, message="TensorBoard's runs")
        assert {*(f"{n}/{part}" for n in SWEEP for part in ("train", "validation")),
                "auto/train"} <= served  # auto's exam script validates nothing
        assert not any(r.startswith("nolog") for r in served)
        # the event files hold the epochs' values: the same as history.jsonl
        query = urllib.parse.urlencode({"run": f"{SWEEP[0]}/validation", "tag": "epoch_loss"})

        def scalars() -> list[list[float]] | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/"
                                            f"scalars?{query}", timeout=5) as r:
                    return json.load(r) or None
            except OSError:
                return None

        points = wait_for(scalars, timeout=60, interval=0.5, message="the scalars")
        want = [r["val_loss"] for r in history(trained.root, SWEEP[0])]
        assert [int(step) for _, step, _ in points] == [0, 1, 2, 3]
        assert [v for _, _, v in points] == pytest.approx(want, abs=1e-5)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "serving 3 run(s) at http://127.0.0.1:" in said.read_text()


def test_tensorboard_with_nothing_to_serve_says_so(project_dir: Path) -> None:
    write(project_dir, "a.py", "print(1)\n")
    run_orch(project_dir, "init", check=True)
    proc = run_orch(project_dir, "tensorboard", "--port", str(free_port()))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "orch: error: no learning curves in this project yet: jobs that use orch's "
        "callbacks (or --auto-track) bring them back in models/NAME/logs/"]


def test_tensorboard_not_installed_says_which_extra(trained: Trained, tmp_path: Path) -> None:
    """A Python where ``tensorboard`` cannot be imported (a sitecustomize hides it)."""
    write(tmp_path, "hide/sitecustomize.py", "import sys\nsys.modules['tensorboard'] = None\n")
    proc = run_orch(trained.root, "tensorboard", "--port", str(free_port()),
                    env={"PYTHONPATH": f"{tmp_path / 'hide'}{os.pathsep}{REPO}"})
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "orch: error: tensorboard is not installed: pip install 'orch[tf]' (or pip install "
        "tensorboard)"]


@pytest.mark.parametrize("width", [24, 80, 200])
def test_the_text_plot_keeps_its_width_in_odd_cases(width: int) -> None:
    """One epoch, a flat curve, a curve with gaps, more curves than markers."""
    from orchestrator.curveplot import plot, table
    from orchestrator.curves import Curve

    from .conftest import job

    curves = [Curve(job("one"), ({"epoch": 0, "loss": 0.5},), "x"),
              Curve(job("flat"), tuple({"epoch": e, "loss": 0.5} for e in range(5)), "x"),
              Curve(job("gaps"), ({"epoch": 0, "acc": 1.0}, {"epoch": 1, "loss": 2.0}), "x"),
              *(Curve(job(f"n{i}"), tuple({"epoch": e, "loss": i + e} for e in range(3)), "x")
                for i in range(8))]
    lines = plot(curves, "loss", width).splitlines()
    assert {len(line) for line in lines} == {width}
    assert [line.split()[0] for line in lines if "┤" in line] == ["9", "4.5", "0"]
    text = table(curves, ["loss", "acc"], width)
    assert re.search(r"gaps \(gaps\)\s+2\s+2 @2\s+2\s", text), text
    flat_row = next(line for line in text.splitlines() if line.startswith("flat"))
    assert re.search(r"flat \(flat\)\s+5\s+0\.5 @1\s+0\.5(\s|$)", flat_row), text


def test_a_history_with_nan_or_infinity_still_plots() -> None:
    """A diverged run (or a history written elsewhere) may hold NaN: left out."""
    from orchestrator.curveplot import plot
    from orchestrator.curves import Curve, parse_lines

    from .conftest import job

    rows = parse_lines('{"epoch": 0, "loss": 1.5}\n{"epoch": 1, "loss": NaN}\n'
                       '{"epoch": 2, "loss": Infinity, "acc": 0.5}\n')
    assert rows == [{"epoch": 0.0, "loss": 1.5}, {"epoch": 1.0}, {"epoch": 2.0, "acc": 0.5}]
    lines = plot([Curve(job("nan"), tuple(rows), "x")], "loss", 60).splitlines()
    assert {len(line) for line in lines} == {60}
