"""Shared fixtures: real projects in tmp_path, the real CLI in subprocesses, a
polling helper with a deadline, and clean-up of every process a test started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from orchestrator.config import Project, load_settings
from orchestrator.procgroup import stat_fields
from orchestrator.store import Store

if TYPE_CHECKING:
    from tests.sshd import Sshd

REPO = Path(__file__).resolve().parent.parent

FAST_SETTINGS = """\
heartbeat_interval = 0.2
lease_ttl = 4
tick_interval = 0.2
daemon_idle_timeout = 60
worker_idle_timeout = 30
"""


def write(root: Path, rel: str, content: str | bytes = "x") -> Path:
    """Write ``content`` to ``root/rel`` (folders made as needed); the path."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def heartbeat(wid: str, seq: int = 1, state: str = "idle", kind: str = "local",
              gpu: bool = False, name: str | None = None, host: str = "elsewhere",
              pid: int | None = None, **caps: Any) -> Any:
    """A worker's heartbeat document, as a worker of ``kind`` writes it."""
    from orchestrator import protocol as P

    return P.Heartbeat(worker_id=wid, name=name or wid, host=host, pid=pid, seq=seq,
                       state=P.WorkerState(state),
                       capabilities=P.Capabilities(kind=kind, gpu=gpu,
                                                   gpu_name="T4" if gpu else None, **caps))


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1,
             message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message} (last: {last!r})")


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = Path(f"/proc/{entry}/environ").read_bytes().decode("utf-8", "replace")
        except OSError:
            continue
        if text in cmdline or text in environ:
            pids.append(int(entry))
    return pids


def process_table() -> dict[int, list[str]]:
    """Every process now: pid → its ``/proc/PID/stat`` fields after the command name
    (``[state, ppid, pgrp, ...]``, :func:`orchestrator.procgroup.stat_fields`)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := stat_fields(entry)) is not None:
            table[int(entry)] = fields
    return table


def group_alive(pgid: int) -> bool:
    """Whether any live process is in process group ``pgid`` (zombies count as gone)."""
    return any(fields[2] == str(pgid) and fields[0] != "Z"
               for fields in process_table().values())


def kill_processes_of(path: Path) -> None:
    """SIGKILL every process whose command line or environment names ``path``."""
    for pid in _processes_mentioning(str(path)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def project_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty project folder with fast timings; every process started for it is
    killed at teardown."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "orch.toml").write_text(FAST_SETTINGS)
    yield root
    kill_processes_of(root)


@pytest.fixture
def project(project_dir: Path) -> Project:
    p = Project(project_dir, load_settings(project_dir, environ={}))
    p.init()
    return p


@pytest.fixture
def store(project: Project) -> Iterator[Store]:
    s = Store(project.db_path)
    yield s
    s.close()


def orch_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for orch subprocesses: no ORCH_* settings, orch importable."""
    from tests.drive_project import clean_env

    return clean_env(extra)


def run_orch(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300,
             check: bool = False, input_text: str | None = None
             ) -> subprocess.CompletedProcess[str]:
    """Run the real CLI (``python -m orchestrator``) in ``cwd``; ``input_text`` is
    its standard input (default: none at all, as in CI)."""
    stdin = {"input": input_text} if input_text is not None else {"stdin": subprocess.DEVNULL}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], cwd=cwd, env=orch_env(env),
        capture_output=True, text=True, timeout=timeout, **stdin,  # type: ignore[call-overload]
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"orch {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def orch(project_dir: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``orch("status", "--json")`` runs the CLI in the project folder."""

    def call(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return run_orch(project_dir, *args, **kw)

    return call


def job_state(project_dir: Path, ref: str) -> dict[str, Any]:
    """A job as `orch status JOB --json` reports it (through the real CLI)."""
    out = run_orch(project_dir, "status", ref, "--json", check=True).stdout
    return json.loads(out)


def read_job(project_dir: Path, job_id: str) -> Any:
    """A job read straight from the store (cheaper than the CLI, for polling)."""
    with Store(project_dir / ".orch" / "state.db") as s:
        return s.get(job_id)


TINY_KERAS_SCRIPT = '''\
"""A tiny real Keras training job used by the tests."""
import argparse, os, time
import numpy as np
import keras
from orchestrator.keras import callbacks, output_dir

p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--sleep", type=float, default=0.0)  # seconds per epoch, to slow it down
p.add_argument("--out", default="model.keras")
a = p.parse_args()
rng = np.random.default_rng(0)
x = rng.normal(size=(256, 8)).astype("float32")
y = (x.sum(axis=1) > 0).astype("float32")
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])

class Slow(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(a.sleep)

model.fit(x, y, epochs=a.epochs, batch_size=32, verbose=2, callbacks=[Slow(), *callbacks()])
model.save(output_dir() / a.out)
print("saved", a.out)
'''


# ---- the local Drive v3 server -------------------------------------------------------

_FAKE_DRIVE: Any = None


def fake_drive() -> Any:
    """One local Drive v3 server for the whole test session (tests keep to their own
    folders). Started on first use; stopped when the session ends."""
    global _FAKE_DRIVE
    if _FAKE_DRIVE is None:
        import atexit

        from orchestrator.sandbox.drive import FakeDrive

        _FAKE_DRIVE = FakeDrive()
        atexit.register(_FAKE_DRIVE.stop)
    return _FAKE_DRIVE


@pytest.fixture
def drive() -> Iterator[Any]:
    """The session's fake Drive, with faults and lag cleared before and after."""
    fake = fake_drive()
    fake.faults.clear()
    fake.require_auth = True
    yield fake
    fake.faults.clear()


SAVE_SCRIPT = """\
import os, pathlib, sys, time
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0)
out = pathlib.Path(os.environ["ORCH_OUTPUT_DIR"])
(out / "model.bin").write_bytes(os.environ["ORCH_JOB_ID"].encode() * 1000)
print("trained", os.environ["ORCH_JOB_ID"], "attempt", os.environ["ORCH_ATTEMPT"])
"""


def drive_project(root: Path, fake: Any, lease: float = 30.0, settings: str = "") -> Any:
    """A project whose remote hub is a folder on the local Drive server, with fast
    timings, ``settings`` (orch.toml lines) and ``save.py`` (sleeps argv[1] seconds,
    writes model.bin)."""
    from tests.drive_project import DriveProject

    p = DriveProject(root, fake, f"orch-hub/{root.parent.name}", FAST_SETTINGS + (
        f"remote_lease_ttl = {lease}\ndrive_poll_interval = 0.3\n") + settings)
    (root / "save.py").write_text(SAVE_SCRIPT)
    return p


def drive_hub(folder: str, **kw: Any) -> Any:
    """A DriveHub on the fake server with test-friendly timings."""
    from orchestrator.hubs.drive import DriveHub

    fake = fake_drive()
    kw.setdefault("backoff", 0.01)
    kw.setdefault("max_backoff", 0.2)
    kw.setdefault("staleness", 0.2)
    return DriveHub(folder, credentials=fake.credentials(), api_url=fake.url, **kw)


# ---- placement: jobs, workers and heartbeats as the planner sees them ----------------


def job(name: str, estimate_s: float | None = None, checkpoints: bool = False,
        target: str = "auto", gpu: str = "any") -> Any:
    """A queued Job record (not stored) named ``name``, script ``name.py``."""
    from orchestrator.models import GpuNeed, Job, JobState

    return Job(id=name, seq=1, name=name, script=f"{name}.py", args=(), target=target,
               gpu=GpuNeed(gpu), priority=0, estimate_s=estimate_s, snapshot_sha256="0" * 64,
               data=(), outputs=(), env=(), autotrack=False, state=JobState.QUEUED,
               attempt=1, worker_id=None, submitted_at=0.0, updated_at=0.0, started_at=None,
               finished_at=None, checkpoints=checkpoints)


def worker(wid: str, kind: str = "local", gpu: str | None = None, hub: str = "local",
           **kw: Any) -> Any:
    """A WorkerInfo record (not stored); ``gpu``: its GPU's name, None for a CPU."""
    from orchestrator.models import WorkerInfo

    return WorkerInfo(id=wid, name=wid, kind=kind, host="h", pid=None, gpu=gpu is not None,
                      gpu_name=gpu, state="idle", job_id=None, attempt=None, last_seen=0.0,
                      gone=False, hub=hub, **kw)


def beat(hub: Any, wid: str, **caps: Any) -> None:
    """Write a fresh heartbeat (a new seq each time) of worker ``wid`` to ``hub``."""
    from orchestrator import protocol as P

    kind = caps.pop("kind", "local")
    hub.put_doc(P.heartbeat(wid), P.Heartbeat(
        worker_id=wid, name=wid, host="elsewhere", pid=None, seq=time.monotonic_ns(),
        state=P.WorkerState.IDLE, capabilities=P.Capabilities(kind=kind, **caps)))


def queue(project: Project, store: Store, name: str, **kw: Any) -> Any:
    """Submit ``name.py`` (a one-line script) as job ``name``; the stored Job."""
    from orchestrator.submit import SubmitRequest, submit

    (project.root / f"{name}.py").write_text("print(1)\n")
    return submit(project, SubmitRequest(script=str(project.root / f"{name}.py"), name=name,
                                         **kw), store=store)[0]


# ---- a real OpenSSH server on 127.0.0.1 ----------------------------------------------


def under_ci() -> bool:
    """Whether the tests run in CI (``CI`` set to anything but empty, 0 or false)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A real sshd on 127.0.0.1 (tests/sshd.py) with its own host key, user key and free
    port, logging in as the current user; stopped at teardown, its sessions with it.
    Without OpenSSH installed the test is skipped, but under CI it fails (CI installs it)."""
    from tests.sshd import Sshd, ssh_available

    if not ssh_available():
        reason = "needs OpenSSH's /usr/sbin/sshd and ssh-keygen (scripts/setup.sh as root)"
        if under_ci():
            pytest.fail(f"{reason}: missing under CI")
        pytest.skip(reason)
    server = Sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ssh_host(project: Project, sshd: Sshd, tmp_path: Path) -> Iterator[Any]:
    """``project`` with the real sshd added as SSH host ``box`` (its key trusted in
    ``.orch/known_hosts``, this Python, orch's folder on the "host" in
    ``tmp_path/host``); every process of that folder is killed at teardown."""
    from orchestrator.hosts import Host, Hosts

    hosts = Hosts(project.state_dir)
    host = Host(name="box", user=sshd.user, address=sshd.host, port=sshd.port,
                key=str(sshd.user_key), python=sys.executable,
                workdir=str(tmp_path / "host"))
    hosts.add(host)
    hosts.known_hosts.write_text(sshd.known_hosts_line + "\n")
    yield host
    kill_processes_of(tmp_path / "host")


# ---- a real Ray cluster on this machine ------------------------------------------------


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A real Ray cluster (tests/raycluster.py): a head with no CPUs and a node of 2,
    for the whole session; stopped at the end. Without ray installed the tests are
    skipped, but under CI they fail (CI installs the `ray` extra)."""
    from tests.raycluster import RayCluster, ray_available

    if not ray_available():
        if under_ci():
            pytest.fail("ray is missing under CI (scripts/test.sh installs orch[ray])")
        pytest.skip("needs ray: pip install 'orch[ray]'")
    cluster = RayCluster(cpus=2)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def ray_project(project: Project, ray_cluster: Any, tmp_path: Path) -> Iterator[Any]:
    """``project`` with the session's cluster added as ``lab`` (this Python, up to 2
    workers, the hub folder in ``tmp_path/shared``); every worker of that folder is
    killed at teardown, so the next test finds the cluster's CPUs free."""
    from orchestrator.clusters import Cluster, Clusters

    (tmp_path / "shared").mkdir()
    cluster = Cluster(name="lab", address=ray_cluster.address,
                      hub=f"folder:{tmp_path / 'shared' / 'hub'}", python=sys.executable,
                      max_workers=2)
    Clusters(project.state_dir).add(cluster)
    yield cluster
    kill_processes_of(tmp_path / "shared")
    wait_for(lambda: ray_cluster.free_cpus() >= ray_cluster.cpus, timeout=60,
             message="the cluster's CPUs free again")


# ---- orch's sandbox (`orch sandbox`: a detached local Drive server, stand-in Colab) ----


def needs_nbclient() -> None:
    """Skip unless nbclient and ipykernel are installed; under CI, fail instead (CI
    installs the test extra, which has them)."""
    import importlib.util

    missing = [m for m in ("nbclient", "ipykernel", "nbformat")
               if importlib.util.find_spec(m) is None]
    if missing:
        reason = f"needs {', '.join(missing)}: pip install 'orch[sandbox]'"
        if under_ci():
            pytest.fail(f"{reason}: missing under CI")
        pytest.skip(reason)


@pytest.fixture
def sandbox_dir(tmp_path: Path) -> Iterator[Path]:
    """A state folder for `orch sandbox --dir`; whatever runs there is stopped at
    teardown (through the CLI, then any process still naming the folder is killed)."""
    folder = tmp_path / "sandbox"
    yield folder
    run_orch(tmp_path, "sandbox", "down", "--dir", str(folder), timeout=60)
    kill_processes_of(folder)


# ---- a real terminal (tmux) ------------------------------------------------------------


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Any]:
    """A tmux server of its own (tests/tmux.py), killed at teardown. Without tmux
    the test is skipped, but under CI it fails (scripts/setup.sh installs it)."""
    from tests.tmux import Tmux, tmux_available

    if not tmux_available():
        if under_ci():
            pytest.fail("tmux is missing under CI (scripts/setup.sh installs it)")
        pytest.skip("needs tmux (scripts/setup.sh installs it as root)")
    terminal = Tmux(tmp_path / "tmux")
    try:
        yield terminal
    finally:
        terminal.kill()
