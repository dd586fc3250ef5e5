"""The worker program on its own: a real subprocess against a folder hub, fed
by the scheduler (no daemon), so runs are deterministic with --burst."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import protocol as P
from orchestrator.config import Project
from orchestrator.hubs.folder import FolderHub
from orchestrator.models import GpuNeed, JobState
from orchestrator.scheduler import Scheduler
from orchestrator.store import Store
from orchestrator.submit import SubmitRequest, submit

from .conftest import orch_env, run_orch
from .test_scheduler import beat

S = JobState

SCRIPT = """\
import json, os, pathlib, sys
data = pathlib.Path("data/table.csv").read_text()
out = pathlib.Path(os.environ["ORCH_OUTPUT_DIR"])
(out / "seen.json").write_text(json.dumps({
    "args": sys.argv[1:], "data": data, "color": os.environ.get("COLOR"),
    "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "attempt": os.environ["ORCH_ATTEMPT"],
    "dirs": [os.environ[k] for k in ("ORCH_OUTPUT_DIR", "ORCH_CHECKPOINT_DIR", "ORCH_RUN_DIR")],
}))
"""


def run_burst_worker(project: Project, worker_id: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.worker", "--hub", str(project.hub_dir),
         "--name", "w", "--id", worker_id, "--work-dir", str(project.work_dir), "--burst"],
        env=orch_env(), capture_output=True, text=True, timeout=120,
    )


def test_burst_worker_runs_assigned_jobs_with_data_env_and_sweep_args(
        project: Project, store: Store) -> None:
    (project.root / "data").mkdir()
    (project.root / "data" / "table.csv").write_text("a,b\n1,2\n")
    (project.root / "job.py").write_text(SCRIPT)
    jobs = submit(project, SubmitRequest(
        script=str(project.root / "job.py"), script_args=("--base", "1"),
        data=(str(project.root / "data" / "table.csv"),), env=("COLOR=blue",),
        sweep=("lr=0.1,0.01",), gpu=GpuNeed.NONE),
        store=store)
    assert [j.name for j in jobs] == ["job_lr=0.1", "job_lr=0.01"]
    # both jobs share the data blob and the code snapshot
    assert jobs[0].data == jobs[1].data and jobs[0].snapshot_sha256 == jobs[1].snapshot_sha256
    blobs = sorted(p.name for p in (project.hub_dir / "blobs").iterdir())
    assert blobs == sorted({jobs[0].snapshot_sha256, jobs[0].data[0].sha256})
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub)
    done: dict[str, object] = {}
    for n, _ in enumerate(jobs, start=1):
        beat(hub, "w-1", seq=1000 + n)  # the worker is known to the daemon
        sched.tick()  # one job per worker at a time: assigns the next one
        proc = run_burst_worker(project, worker_id="w-1")
        assert proc.returncode == 0, proc.stderr
        sched.tick()
        done.update((j.id, j) for j in store.jobs([S.SUCCEEDED]))
        assert len(done) == n  # exactly one more job ran in this burst
    results = list(done.values())
    for job in results:
        assert job.state is S.SUCCEEDED
        import tarfile

        with tarfile.open(hub.local_path(P.result_tar(job.id, 1))) as tar:
            seen = json.load(tar.extractfile("0/seen.json"))  # type: ignore[arg-type]
        lr = job.name.split("=")[1]
        assert seen["args"] == ["--base", "1", "--lr", lr]
        assert seen["data"] == "a,b\n1,2\n" and seen["color"] == "blue"
        assert seen["cuda"] == "" and seen["attempt"] == "1"  # --cpu hides GPUs
        assert len(set(seen["dirs"])) == 3


def test_burst_worker_with_empty_inbox_exits_at_once(project: Project) -> None:
    proc = run_burst_worker(project)
    assert proc.returncode == 0, proc.stderr
    beats = list((project.hub_dir / "workers").iterdir())
    assert len(beats) == 1
    final = json.loads((beats[0] / "heartbeat.json").read_text())
    assert final["state"] == "stopped"


def test_worker_cli_entry_point_and_bad_hub(project_dir: Path) -> None:
    out = run_orch(project_dir, "worker", "--help")
    assert out.returncode == 0 and "--burst" in out.stdout
    bad = run_orch(project_dir, "worker", "--hub", "sftp:box/hub", "--burst")
    assert bad.returncode == 2 and "uses the hub folder there" in bad.stderr
    assert "Traceback" not in bad.stderr
    unsigned = run_orch(project_dir, "worker", "--hub", "drive:orch-hub/p", "--burst")
    assert unsigned.returncode == 2 and "credentials" in unsigned.stderr
    assert "Traceback" not in unsigned.stderr


def test_a_worker_refuses_a_hub_of_another_protocol_in_one_line(project: Project,
                                                                tmp_path: Path) -> None:
    hub_json = project.hub_dir / P.hub_json()
    info = json.loads(hub_json.read_text())
    assert info["protocol"] == P.PROTOCOL_VERSION and info["project_id"]
    hub_json.write_text(json.dumps({**info, "protocol": P.PROTOCOL_VERSION + 1,
                                    "orch": "9.9.0"}))
    proc = run_burst_worker(project)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert f"speaks protocol {P.PROTOCOL_VERSION + 1} (written by orch 9.9.0)" in line
    assert "install the same orch version on both sides" in line
    assert not (project.hub_dir / "workers").exists()  # it wrote nothing
    # a hub nobody set up: a burst worker says what to do, and writes nothing either
    bare = subprocess.run(
        [sys.executable, "-m", "orchestrator.worker", "--hub", str(tmp_path / "bare"),
         "--burst", "--work-dir", str(tmp_path / "work")],
        env=orch_env({"ORCH_HUB_KEY": "00" * 32}), capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "not set up (no hub.json)" in bare.stderr
    assert list((tmp_path / "bare").iterdir()) == []


def test_the_project_refuses_a_hub_of_another_project_or_protocol(project: Project,
                                                                 store: Store) -> None:
    from orchestrator.errors import ProtocolError
    from orchestrator.hubs import claim_hub

    hub = FolderHub(project.hub_dir)
    info = hub.get_doc(P.hub_json(), P.HubInfo)
    assert info is not None and claim_hub(hub, info.project_id) == info  # idempotent
    with pytest.raises(ProtocolError, match="belongs to another orch project"):
        claim_hub(hub, "someone-else")
    hub.put_json(P.hub_json(), {**info.to_dict(), "protocol": 1})
    with pytest.raises(ProtocolError, match="speaks protocol 1"):
        Scheduler(project, store, hub)


IMPORT_CHECK = """
import sys, runpy
sys.argv = {argv!r}
try:
    runpy.run_module({module!r}, run_name="__main__")
except SystemExit:
    pass
heavy = ("tensorflow", "keras", "googleapiclient", "fabric", "paramiko", "ray", "pydantic",
         "numpy")
third_party = sorted({{m.split(".")[0] for m in sys.modules}} - set(sys.stdlib_module_names)
                     - {{"orchestrator", "__main__", "_distutils_hack"}}
                     - {{m for m in sys.modules if m.startswith("__editable__")}})
print(",".join(m for m in heavy if m in sys.modules) + "|" + ",".join(third_party))
"""


def _imports(cwd: Path, module: str, argv: list[str]) -> tuple[str, str]:
    proc = subprocess.run([sys.executable, "-c", IMPORT_CHECK.format(argv=argv, module=module)],
                          cwd=cwd, env=orch_env(), capture_output=True, text=True, timeout=60)
    heavy, third = proc.stdout.strip().splitlines()[-1].split("|")
    return heavy, third


def test_worker_starts_on_the_standard_library_alone(project: Project) -> None:
    heavy, third = _imports(project.root, "orchestrator.worker",
                            ["worker", "--hub", str(project.hub_dir), "--burst",
                             "--work-dir", str(project.work_dir)])
    assert heavy == "" and third == ""


def test_cli_never_imports_tensorflow_ssh_or_ray_at_start_up(project: Project) -> None:
    from orchestrator.clusters import Cluster, Clusters
    from orchestrator.hosts import Host, Hosts

    (project.root / "train.py").write_text("print(1)\n")
    Hosts(project.state_dir).add(Host("box", "me", "127.0.0.1", 9))  # nothing listens
    Clusters(project.state_dir).add(Cluster("lab", "http://127.0.0.1:9",
                                            f"folder:{project.root / 'shared'}"))
    for argv in (["orch", "--help"], ["orch", "status"],
                 ["orch", "submit", "train.py", "--json"], ["orch", "hosts", "list"],
                 ["orch", "submit", "train.py", "--on", "ssh:box"],
                 ["orch", "clusters", "list"],
                 ["orch", "submit", "train.py", "--on", "ray:lab"]):
        heavy, _ = _imports(project.root, "orchestrator", argv)
        assert heavy == "", (argv, heavy)
    run_orch(project.root, "daemon", "stop")
