"""`orch submit` through the real CLI (a subprocess): bad input is refused with
one clean line and leaves no job behind; good input stores the right jobs.

Every run sets ORCH_LOCAL_SLOTS=0 and ORCH_GPUS=none, so the daemon a successful
submit starts never runs anything (the project_dir fixture kills it at teardown).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import tarfile
from pathlib import Path

import pytest

from orchestrator.store import Store

from .conftest import run_orch

NO_WORKERS = {"ORCH_LOCAL_SLOTS": "0", "ORCH_GPUS": "none"}
JOB_ID = re.compile(r"^[0-9a-f]{8}$")


@pytest.fixture
def proj(project_dir: Path, store: Store) -> Path:
    """An initialised project with a state database and a small training script."""
    (project_dir / "train.py").write_text(
        "import argparse\np = argparse.ArgumentParser()\np.add_argument('--lr')\n"
        "p.add_argument('--bs')\np.add_argument('--epochs')\nprint(p.parse_args())\n"
    )
    (project_dir / "data.csv").write_text("x,y\n1,2\n")
    (project_dir / "a_dir").mkdir()
    return project_dir


def submit(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_orch(cwd, "submit", *args, env=NO_WORKERS, timeout=60)


def db_counts(root: Path) -> tuple[int, int]:
    """(jobs, events) straight from the SQLite file; (0, 0) if there is none."""
    db = root / ".orch" / "state.db"
    if not db.exists():
        return 0, 0
    con = sqlite3.connect(db)
    try:
        return (con.execute("SELECT COUNT(*) FROM jobs").fetchone()[0],
                con.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        con.close()


def assert_clean_refusal(proc: subprocess.CompletedProcess[str], expect: str) -> None:
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    assert proc.returncode == 2, (proc.returncode, output)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("orch: error: "), lines[0]
    assert expect.lower() in lines[0].lower(), lines[0]
    assert proc.stdout == "", proc.stdout


# ---- refused submits --------------------------------------------------------------

BAD_SUBMITS: dict[str, tuple[list[str], str]] = {
    "missing_script": (["nope.py"], "not found"),
    "script_is_a_directory": (["a_dir"], "not a file"),
    "script_outside_relative": (["../outside.py"], "outside the project"),
    "script_outside_absolute": (["{outside}"], "outside the project"),
    "script_symlink_to_outside": (["link.py"], "outside the project"),
    "unknown_on": (["train.py", "--on", "mars"], "unknown --on"),
    "on_colab_not_configured": (["train.py", "--on", "colab"], "not configured"),
    "on_ssh_not_configured": (["train.py", "--on", "ssh:box"], "not configured"),
    "on_ssh_without_host": (["train.py", "--on", "ssh:"], "host"),
    "sweep_no_equals": (["train.py", "--sweep", "lr"], "--sweep"),
    "sweep_no_values": (["train.py", "--sweep", "lr="], "--sweep"),
    "sweep_empty_value": (["train.py", "--sweep", "lr=1,,2"], "--sweep"),
    "sweep_trailing_comma": (["train.py", "--sweep", "lr=1,"], "--sweep"),
    "sweep_bad_key": (["train.py", "--sweep", "1lr=1,2"], "--sweep"),
    "sweep_no_key": (["train.py", "--sweep", "=1,2"], "--sweep"),
    "sweep_twice": (["train.py", "--sweep", "lr=1", "--sweep", "lr=2"], "twice"),
    "env_no_equals": (["train.py", "--env", "FOO"], "--env"),
    "env_bad_name": (["train.py", "--env", "1X=2"], "--env"),
    "env_no_name": (["train.py", "--env", "=2"], "--env"),
    "env_dash_in_name": (["train.py", "--env", "A-B=2"], "--env"),
    "output_no_source": (["train.py", "--output", ":dest"], "--output"),
    "output_empty_dest": (["train.py", "--output", "a:"], "--output"),
    "output_absolute": (["train.py", "--output", "/abs"], "--output"),
    "output_dotdot": (["train.py", "--output", "../x"], "--output"),
    "output_dest_absolute": (["train.py", "--output", "model.h5:/etc"], "--output"),
    "output_dest_dotdot": (["train.py", "--output", "model.h5:a/../../up"], "--output"),
    "estimate_word": (["train.py", "--estimate", "soon"], "--estimate"),
    "estimate_unit": (["train.py", "--estimate", "10q"], "--estimate"),
    "estimate_negative": (["train.py", "--estimate", "-5m"], "--estimate"),
    "missing_data": (["train.py", "--data", "missing.csv"], "missing.csv"),
    "missing_second_data": (["train.py", "--data", "data.csv", "--data", "nope/"], "nope"),
    "script_also_data": (["train.py", "--data", "train.py"], "--data"),
    "name_slash": (["train.py", "--name", "bad/name"], "--name"),
    "name_space": (["train.py", "--name", "has space"], "--name"),
    "name_dotdot": (["train.py", "--name", "../up"], "--name"),
    "name_hidden": (["train.py", "--name", ".hidden"], "--name"),
    "name_unicode_slash": (["train.py", "--name", "a\u2215b"], "--name"),
    "name_too_long": (["train.py", "--name", "n" * 300], "too long"),
    "sweep_names_too_long": (["train.py", "--name", "n" * 80, "--sweep", "x=" + "v" * 30],
                             "too long"),
    "sweep_too_many_jobs": (["train.py", "--sweep", "a=" + ",".join(map(str, range(40))),
                             "--sweep", "b=" + ",".join(map(str, range(40)))], "1,600 jobs"),
    "estimate_zero": (["train.py", "--estimate", "0s"], "--estimate"),
    "estimate_absurd": (["train.py", "--estimate", "5000d"], "--estimate"),
    "priority_beyond_sqlite": (["train.py", "--priority", "99999999999999999999"], "--priority"),
    "priority_huge_negative": (["train.py", "--priority", "-2000000"], "--priority"),
}


@pytest.mark.parametrize("case", list(BAD_SUBMITS))
def test_bad_submit_is_refused_cleanly(proj: Path, case: str) -> None:
    args, expect = BAD_SUBMITS[case]
    outside = proj.parent / "outside.py"
    outside.write_text("print('outside')\n")
    (proj / "link.py").symlink_to(outside)
    args = [a.replace("{outside}", str(outside)) for a in args]
    proc = submit(proj, *args)
    assert_clean_refusal(proc, expect)
    assert db_counts(proj) == (0, 0)


def test_unreadable_script(proj: Path) -> None:
    script = proj / "secret_train.py"
    script.write_text("print(1)\n")
    script.chmod(0)
    try:
        if os.access(script, os.R_OK):
            pytest.skip("running as a user who can read mode-000 files (root)")
        assert_clean_refusal(submit(proj, "secret_train.py"), "not readable")
    finally:
        script.chmod(0o644)
    assert db_counts(proj) == (0, 0)


@pytest.mark.parametrize(("args", "expect"), [
    ([], "Missing argument"),
    (["train.py", "--priority", "high"], "--priority"),
    (["train.py", "--bogus"], "--bogus"),
    (["train.py", "--on"], "--on"),
])
def test_typer_usage_errors(proj: Path, args: list[str], expect: str) -> None:
    proc = submit(proj, *args)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    assert "Error" in proc.stderr and expect in proc.stderr  # typer's usage box
    assert proc.stdout == ""
    assert db_counts(proj) == (0, 0)


def test_refusals_leave_status_empty(proj: Path) -> None:
    for args in (["nope.py"], ["train.py", "--on", "colab"], ["train.py", "--sweep", "lr="]):
        assert submit(proj, *args).returncode == 2
    status = run_orch(proj, "status", "--json", env=NO_WORKERS, check=True)
    doc = json.loads(status.stdout)
    assert doc["jobs"] == [] and doc["counts"] == {}


def test_refused_submit_in_a_fresh_folder_creates_no_state(project_dir: Path) -> None:
    (project_dir / "train.py").write_text("print(1)\n")
    proc = submit(project_dir, "train.py", "--env", "NOPE")
    assert_clean_refusal(proc, "--env")
    assert not (project_dir / ".orch" / "state.db").exists()


# ---- accepted submits -------------------------------------------------------------


def test_sweep_creates_one_job_per_combination(proj: Path) -> None:
    proc = submit(proj, "train.py", "--sweep", "lr=0.1,0.01", "--sweep", "bs=16,32",
                  "--", "--epochs", "2")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    ids = proc.stdout.split()
    assert proc.stdout == "".join(f"{i}\n" for i in ids)  # the ids, one per line, nothing else
    assert len(ids) == 4 and len(set(ids)) == 4
    assert all(JOB_ID.match(i) for i in ids), ids
    assert "queued 4 job(s)" in proc.stderr

    status = json.loads(run_orch(proj, "status", "--json", env=NO_WORKERS, check=True).stdout)
    jobs = {j["id"]: j for j in status["jobs"]}
    assert set(jobs) == set(ids)
    got = [(jobs[i]["name"], jobs[i]["args"]) for i in ids]
    assert got == [
        ("train_lr=0.1_bs=16", ["--epochs", "2", "--lr", "0.1", "--bs", "16"]),
        ("train_lr=0.1_bs=32", ["--epochs", "2", "--lr", "0.1", "--bs", "32"]),
        ("train_lr=0.01_bs=16", ["--epochs", "2", "--lr", "0.01", "--bs", "16"]),
        ("train_lr=0.01_bs=32", ["--epochs", "2", "--lr", "0.01", "--bs", "32"]),
    ]
    assert {j["state"] for j in jobs.values()} == {"QUEUED"}
    assert status["counts"] == {"QUEUED": 4}

    with Store(proj / ".orch" / "state.db") as s:
        stored = [s.get(i) for i in ids]
    snaps = {j.snapshot_sha256 for j in stored}
    assert len(snaps) == 1
    blobs = sorted(p.name for p in (proj / ".orch" / "hub" / "blobs").iterdir())
    assert blobs == list(snaps)  # one snapshot blob shared by all four
    assert [j.seq for j in stored] == sorted(j.seq for j in stored)
    assert db_counts(proj) == (4, 4)


def test_submit_stores_every_option(proj: Path) -> None:
    (proj / ".env").write_text("SECRET=1\n")
    proc = submit(proj, "train.py", "--name", "exp1", "--env", "A=1", "--env", "B=",
                  "--env", "C=x=y", "--output", "model.h5:.", "--output", "saved",
                  "--estimate", "1h30m", "--priority", "3", "--cpu", "--data", "data.csv",
                  "--on", "LOCAL")
    assert proc.returncode == 0, proc.stderr
    (job_id,) = proc.stdout.split()
    with Store(proj / ".orch" / "state.db") as s:
        job = s.get(job_id)
    assert job.name == "exp1" and job.script == "train.py" and job.args == ()
    assert job.env == (("A", "1"), ("B", ""), ("C", "x=y"))
    assert [(o.src, o.dest) for o in job.outputs] == [("model.h5", "."), ("saved", "")]
    assert job.estimate_s == 5400.0 and job.priority == 3
    assert job.gpu.value == "none" and job.target == "local"
    assert [(d.path, d.kind) for d in job.data] == [("data.csv", "file")]
    blob_dir = proj / ".orch" / "hub" / "blobs"
    assert (blob_dir / job.data[0].sha256).read_text() == "x,y\n1,2\n"
    with tarfile.open(blob_dir / job.snapshot_sha256) as tar:
        shipped = set(tar.getnames())
    assert "train.py" in shipped
    assert "data.csv" not in shipped  # shipped separately, as data
    assert ".env" not in shipped


def test_submit_json_output(proj: Path) -> None:
    proc = submit(proj, "train.py", "--json", "--gpu")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    (job,) = doc["jobs"]
    assert job["name"] == "train" and job["state"] == "QUEUED" and job["script"] == "train.py"
    assert JOB_ID.match(job["id"])
    assert db_counts(proj)[0] == 1


def test_submit_from_a_subfolder(proj: Path) -> None:
    sub = proj / "problems" / "nlp"
    sub.mkdir(parents=True)
    (sub / "train_nlp.py").write_text("print(1)\n")
    proc = submit(sub, "train_nlp.py")
    assert proc.returncode == 0, proc.stderr
    with Store(proj / ".orch" / "state.db") as s:
        job = s.get(proc.stdout.strip())
    assert job.script == "problems/nlp/train_nlp.py" and job.name == "train_nlp"
    assert not (sub / ".orch").exists()


def test_sweep_values_never_make_an_unsafe_job_name(proj: Path) -> None:
    (proj / "configs").mkdir()
    (proj / "configs" / "a.yaml").write_text("lr: 1\n")
    proc = submit(proj, "train.py", "--sweep", "cfg=configs/a.yaml,../../x")
    assert "Traceback" not in proc.stdout + proc.stderr
    if proc.returncode == 2:  # refusing is fine too
        assert db_counts(proj) == (0, 0)
        return
    assert proc.returncode == 0, proc.stderr
    with Store(proj / ".orch" / "state.db") as s:
        jobs = [s.get(i) for i in proc.stdout.split()]
    assert [j.args for j in jobs] == [("--cfg", "configs/a.yaml"), ("--cfg", "../../x")]
    for job in jobs:
        assert "/" not in job.name and ".." not in job.name, job.name
