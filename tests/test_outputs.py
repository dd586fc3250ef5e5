"""What comes back is what this run made: model files saved in the working folder
come back without a flag, a snapshot's copy is never taken for the run's output,
delivered files stay out of later snapshots, pulled files keep their real times,
and a pull that replaces another job's file says so and keeps the old copy."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import time
from pathlib import Path

from orchestrator import protocol as P
from orchestrator.models import JobState

from .conftest import read_job, run_orch, wait_for, write

S = JobState

#: The exam's way: an unchanged script that saves its model in its working folder.
EXAM_SCRIPT = '''\
import numpy as np
import keras
x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
y = (x.sum(axis=1) > 0).astype("float32")
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer="adam", loss="binary_crossentropy")
model.fit(x, y, epochs=1, verbose=0)
model.save("mymodel.h5")
print("saved mymodel.h5")
'''
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def submit_wait(root: Path, *args: str) -> tuple[str, int, str]:
    proc = run_orch(root, "submit", "--wait", *args)
    return proc.stdout.split()[0], proc.returncode, proc.stderr


def test_an_unchanged_exam_script_brings_its_h5_back(project_dir: Path) -> None:
    write(project_dir, "exam.py", EXAM_SCRIPT)
    job_id, code, err = submit_wait(project_dir, "exam.py", "--name", "exam")
    assert code == 0, err
    model = project_dir / "models" / "exam" / "mymodel.h5"
    assert model.read_bytes()[:8] == HDF5_MAGIC
    job = read_job(project_dir, job_id)
    assert job.state is S.PULLED and job.pulled_to == ("models/exam/mymodel.h5",)
    # pulled files carry the time the run made them, not a fixed date
    assert job.started_at is not None
    assert job.started_at - 5 <= model.stat().st_mtime <= time.time()


def test_an_output_the_run_did_not_make_fails_and_leaves_the_project_alone(
        project_dir: Path) -> None:
    old = write(project_dir, "mymodel.h5", b"OLD MODEL")
    os.utime(old, (1_600_000_000, 1_600_000_000))
    write(project_dir, "exam.py", "print('forgot to save')\n")
    job_id, code, err = submit_wait(project_dir, "exam.py", "--output", "mymodel.h5:.")
    assert code == 1
    job = read_job(project_dir, job_id)
    assert job.state is S.FAILED
    assert "output mymodel.h5 was not made by this run" in (job.error or "")
    assert "not made by this run" in err
    assert old.read_bytes() == b"OLD MODEL" and old.stat().st_mtime == 1_600_000_000
    # and a script that saves nothing at all says so
    write(project_dir, "noop.py", "print('no model')\n")
    _, code, err = submit_wait(project_dir, "noop.py")
    assert code == 1 and "wrote no output" in err


def test_delivered_files_stay_out_of_later_snapshots_unless_given_as_data(
        project_dir: Path) -> None:
    write(project_dir, "exam.py", "open('mymodel.h5', 'wb').write(b'h5' * 100)\n")
    first, code, err = submit_wait(project_dir, "exam.py", "--output", "mymodel.h5:.")
    assert code == 0, err
    assert (project_dir / "mymodel.h5").read_bytes() == b"h5" * 100
    out = run_orch(project_dir, "submit", "--dry-run", "exam.py", check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("mymodel.h5"))
    assert f"delivered into the project by orch (job {first})" in line
    with_data = run_orch(project_dir, "submit", "--dry-run", "--data", "mymodel.h5",
                         "exam.py", check=True).stdout
    assert "shipped as --data" in with_data


def test_a_pull_that_replaces_another_jobs_file_says_so_and_keeps_it(
        project_dir: Path) -> None:
    write(project_dir, "a.py", "open('mymodel.h5', 'wb').write(b'from A')\n")
    write(project_dir, "b.py", "open('mymodel.h5', 'wb').write(b'from B')\n")
    first, code, _ = submit_wait(project_dir, "a.py", "--output", "mymodel.h5:.")
    assert code == 0
    second, code, _ = submit_wait(project_dir, "b.py", "--output", "mymodel.h5:.")
    assert code == 0
    assert (project_dir / "mymodel.h5").read_bytes() == b"from B"
    detail = run_orch(project_dir, "status", second, check=True).stdout
    note = next(ln for ln in detail.splitlines() if "replaced mymodel.h5" in ln)
    assert f"delivered by job {first} (a)" in note
    kept = project_dir / note.split("the replaced copy is in ")[1].strip()
    assert kept.read_bytes() == b"from A" and ".orch/replaced/" in str(kept)
    # pulling the same job again replaces its own file quietly
    again = run_orch(project_dir, "pull", "--all", second, check=True)
    assert "replaced" not in again.stderr


def test_a_symlink_in_the_output_dir_never_packs_an_outside_file(project_dir: Path,
                                                                  tmp_path: Path) -> None:
    secret = write(tmp_path, "outside/secret.txt", "SECRET-OUTSIDE")
    write(project_dir, "leak.py",
          "import os, pathlib\n"
          "out = pathlib.Path(os.environ['ORCH_OUTPUT_DIR'])\n"
          f"(out / 'innocent.txt').symlink_to({str(secret)!r})\n"
          "(out / 'model.keras').write_bytes(b'model')\n")
    job_id, code, err = submit_wait(project_dir, "leak.py", "--name", "leak")
    assert code == 0, err
    assert sorted(p.name for p in (project_dir / "models" / "leak").iterdir()) == [
        "model.keras"]
    wait_for(lambda: (project_dir / ".orch" / "hub" / P.result_json(job_id, 1)).is_file(),
             timeout=10, message="the seal")
    with tarfile.open(project_dir / ".orch" / "hub" / P.result_tar(job_id, 1)) as tar:
        assert [m.name for m in tar.getmembers()] == ["0/model.keras"]


def test_a_result_with_a_link_out_of_its_destination_is_refused(project_dir: Path,
                                                                 tmp_path: Path) -> None:
    write(project_dir, "ok.py", "import os, pathlib\n"
          "pathlib.Path(os.environ['ORCH_OUTPUT_DIR'], 'm.keras').write_bytes(b'm')\n")
    proc = run_orch(project_dir, "submit", "ok.py", check=True,
                    env={"ORCH_AUTO_PULL": "false"})
    job_id = proc.stdout.split()[0]
    wait_for(lambda: read_job(project_dir, job_id).state is S.SUCCEEDED, timeout=60,
             message="sealed")
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        link = tarfile.TarInfo("0/model.keras")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    hub = project_dir / ".orch" / "hub"
    (hub / P.result_tar(job_id, 1)).write_bytes(evil.read_bytes())
    sealed = json.loads((hub / P.result_json(job_id, 1)).read_text())
    sealed["sha256"] = hashlib.sha256(evil.read_bytes()).hexdigest()
    (hub / P.result_json(job_id, 1)).write_text(json.dumps(sealed))
    pulled = run_orch(project_dir, "pull", job_id, env={"ORCH_AUTO_PULL": "false"})
    assert pulled.returncode == 1 and "outside the destination" in pulled.stderr
    assert not (project_dir / "models").exists()
