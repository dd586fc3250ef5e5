"""The worker: one program for every place that trains (local, Colab, SSH host).

It heartbeats into the hub, takes the assignments the daemon writes into its
inbox, runs each job's script in a subprocess, forwards progress, checkpoints and
logs, and seals the result (``result.json`` is written last). It imports only the
standard library and orch's hub code, so it starts fast and runs anywhere.

Writes, per the protocol: its heartbeat; for the attempts it was given, their
status, log, metrics, checkpoint and result. A worker whose assignment has been
withdrawn (lease expired: the job now runs as a newer attempt) kills its run and
writes nothing more for it. Signals: SIGTERM finishes the current job then exits;
SIGINT stops the run at once (the daemon re-queues it).

Usage: ``python -m orchestrator.worker --hub PATH [--name N] [--burst]``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from . import protocol as P
from .archive import HashingWriter, safe_extract, sha256_file, tree_files, write_tar
from .errors import HubError, OrchError
from .hubs import Hub, open_hub

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 20


def _pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel SIGKILL the job if the worker dies (even by kill -9)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
except (OSError, AttributeError):  # pragma: no cover
    _PRCTL = None


@dataclass(frozen=True)
class WorkerConfig:
    """How one worker runs. ``gpu`` is the CUDA device index it owns, if any."""

    hub: str
    name: str
    work_dir: Path
    kind: str = "local"
    burst: bool = False
    idle_timeout: float = 60.0
    heartbeat_interval: float = 1.0
    poll_interval: float = 0.2
    check_interval: float = 1.0
    log_interval: float = 1.0
    gpu: str | None = None
    gpu_name: str | None = None
    session_hours: float | None = None
    only_job: str | None = None
    worker_id: str = field(default="")
    credentials: str | None = None


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file ('' if absent)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return tail_text(text, lines)


def tail_text(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines; carriage-return progress bars are
    collapsed to their last state."""
    rows = [r.rsplit("\r", 1)[-1] for r in text[-64 * 1024:].split("\n")]
    return "\n".join([r for r in rows if r.strip()][-lines:])


class Superseded(Exception):
    """This worker's assignment was withdrawn; stop without writing."""


class Worker:
    def __init__(self, cfg: WorkerConfig, hub: Hub | None = None) -> None:
        wid = cfg.worker_id or f"{cfg.name}-{secrets.token_hex(3)}"
        self.cfg = cfg
        self.id = wid
        self.hub = hub or open_hub(cfg.hub, credentials=Path(cfg.credentials)
                                   if cfg.credentials else None,
                                   staleness=min(cfg.poll_interval, 2.0))
        self.work_dir = cfg.work_dir / wid
        self.started = time.time()
        self.deadline = (
            self.started + cfg.session_hours * 3600 if cfg.session_hours else None
        )
        self._seq = 0
        self._state = "idle"
        self._job: tuple[str, int] | None = None
        self._progress: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()  # finish current job, then exit
        self._abort = threading.Event()  # stop the run now
        self._done: set[tuple[str, int]] = set()
        self.jobs_run = 0

    # ---- heartbeat --------------------------------------------------------

    def capabilities(self) -> dict[str, Any]:
        return {
            "kind": self.cfg.kind,
            "gpu": self.cfg.gpu is not None,
            "gpu_name": self.cfg.gpu_name,
            "cuda_visible_devices": self.cfg.gpu,
            "cpus": os.cpu_count(),
            "heartbeat_interval": self.cfg.heartbeat_interval,
            "session_deadline": self.deadline,
            # relative, so the daemon's clock is the only one that matters
            "session_left": None if self.deadline is None else self.deadline - time.time(),
            "python": platform.python_version(),
            "orch": __version__,
        }

    def beat(self) -> None:
        with self._lock:
            self._seq += 1
            doc = {
                "worker_id": self.id,
                "name": self.cfg.name,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "seq": self._seq,
                "state": self._state,
                "job_id": self._job[0] if self._job else None,
                "attempt": self._job[1] if self._job else None,
                "progress": self._progress,
                "capabilities": self.capabilities(),
                "started": self.started,
                "time": time.time(),
            }
        try:
            self.hub.put_json(P.heartbeat(self.id), doc)
        except HubError as exc:
            log.warning("heartbeat failed: %s", exc)

    def _heartbeat_loop(self) -> None:
        while not self._abort.wait(self.cfg.heartbeat_interval):
            if self._state == "stopped":
                return
            self.beat()

    def _set(self, state: str, job: tuple[str, int] | None = None) -> None:
        with self._lock:
            self._state = state
            self._job = job
            if job is None:
                self._progress = {}
        self.beat()

    # ---- main loop ----------------------------------------------------------

    def next_assignment(self) -> tuple[str, int] | None:
        found = []
        for name in self.hub.list(P.inbox_dir(self.id)):
            parsed = P.parse_inbox_name(name)
            if parsed and parsed not in self._done:
                found.append(parsed)
        return min(found, key=lambda a: (a[1], a[0])) if found else None

    def run(self) -> int:
        """Work until idle (or, with ``burst``, until the inbox is empty). Returns
        the number of jobs run."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.beat()
        log.info("worker %s on hub %s (kind %s, gpu %s)", self.id, self.hub.url,
                 self.cfg.kind, self.cfg.gpu)
        hb = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        hb.start()
        idle_since = time.monotonic()
        try:
            while not (self._stop.is_set() or self._abort.is_set()):
                assignment = self.next_assignment()
                if assignment is not None:
                    self._done.add(assignment)
                    self.run_attempt(*assignment)
                    idle_since = time.monotonic()
                    if self.cfg.only_job and assignment[0] == self.cfg.only_job:
                        break
                    continue
                if self.cfg.burst:
                    break
                if time.monotonic() - idle_since > self.cfg.idle_timeout:
                    log.info("idle for %.0f s; exiting", self.cfg.idle_timeout)
                    break
                self._stop.wait(self.cfg.poll_interval)
        finally:
            self._set("stopped")
            self._abort.set()
            hb.join(timeout=5)
            shutil.rmtree(self.work_dir, ignore_errors=True)
        return self.jobs_run

    def request_stop(self, now: bool = False) -> None:
        (self._abort if now else self._stop).set()

    # ---- one attempt --------------------------------------------------------

    def run_attempt(self, job_id: str, n: int) -> None:
        done = self.hub.get_json(P.status(job_id, n))
        if done and done.get("phase") in P.TERMINAL_PHASES:
            log.info("%s.%d already ended (%s); skipping", job_id, n, done.get("phase"))
            return
        run = Attempt(self, job_id, n)
        self._set("busy", (job_id, n))
        try:
            run.execute()
        except Superseded:
            log.warning("%s attempt %d was superseded; stopped it", job_id, n)
        except Exception as exc:  # noqa: BLE001 - a bug or I/O fault must fail the attempt,
            log.exception("attempt %s.%d hit a worker error", job_id, n)  # not the worker
            try:
                run.fail(f"worker error: {type(exc).__name__}: {exc}")
            except Exception:  # noqa: BLE001
                log.exception("could not report the failure of %s.%d", job_id, n)
        finally:
            self.jobs_run += 1
            self._set("idle")


class Attempt:
    """One attempt of one job on this worker: set up, run, monitor, seal."""

    def __init__(self, worker: Worker, job_id: str, n: int) -> None:
        self.w = worker
        self.hub = worker.hub
        self.job_id = job_id
        self.n = n
        self.dir = worker.work_dir / job_id / str(n)
        self.src = self.dir / "src"
        self.out = self.dir / "out"
        self.ckpt = self.dir / "ckpt"
        self.log_path = self.dir / "log.txt"
        self.status: dict[str, Any] = {
            "job_id": job_id, "attempt": n, "worker_id": worker.id, "phase": P.PHASE_STARTING,
            "started_at": time.time(),
        }
        self._sent: dict[str, float] = {}

    # -- hub writes, fenced --

    def still_mine(self) -> bool:
        return self.hub.exists(P.inbox(self.w.id, self.job_id, self.n))

    def put_status(self, **fields: Any) -> None:
        self.status.update(fields, updated=time.time())
        self.hub.put_json(P.status(self.job_id, self.n), self.status)

    def fail(self, error: str, exit_code: int | None = None) -> None:
        self.push_files(force=True)
        self.put_status(phase=P.PHASE_FAILED, error=error, exit_code=exit_code,
                        log_tail=tail(self.log_path), ended_at=time.time())
        log.info("%s.%d failed: %s", self.job_id, self.n, error)

    def push_files(self, force: bool = False) -> None:
        """Send the log and metrics if they changed since last time."""
        for local, key in (
            (self.log_path, P.log(self.job_id, self.n)),
            (self.dir / "metrics.jsonl", P.metrics(self.job_id, self.n)),
        ):
            try:
                mtime = local.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            if force or self._sent.get(key) != mtime:
                self.hub.put_file(key, local)
                self._sent[key] = mtime

    # -- stages --

    def execute(self) -> None:
        manifest = self.hub.get_json(P.manifest(self.job_id))
        if manifest is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.fail("job manifest missing from the hub")
            return
        if self.hub.exists(P.cancel(self.job_id)):
            self.put_status(phase=P.PHASE_CANCELLED, ended_at=time.time())
            return
        shutil.rmtree(self.dir, ignore_errors=True)
        for d in (self.src, self.out, self.ckpt):
            d.mkdir(parents=True)
        self.put_status(phase=P.PHASE_STARTING)
        try:
            self.prepare(manifest)
        except (OrchError, OSError) as exc:
            self.fail(f"could not set up the run: {exc}")
            return
        if not self.still_mine():
            raise Superseded()
        code = self.run_script(manifest)
        if code is None:
            return  # cancelled or superseded; already handled
        self.push_files(force=True)
        if code != 0:
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            self.fail(f"script {how}", exit_code=code)
            return
        self.seal(manifest)

    def fetch_blob(self, sha: str, dest: Path) -> None:
        """Copy blob ``sha`` to ``dest``, from this machine's blob cache when it is
        there (blobs are immutable: a second job sharing data downloads nothing)."""
        cache = self.w.cfg.work_dir / "blobs"
        cached = cache / sha
        if not cached.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            tmp = cache / f".{sha}.{os.getpid()}.part"
            self.hub.get_file(P.blob(sha), tmp)
            got = sha256_file(tmp)
            if got != sha:
                tmp.unlink(missing_ok=True)
                raise HubError(f"blob {sha[:12]} arrived corrupt (sha256 {got[:12]})")
            os.replace(tmp, cached)
        shutil.copyfile(cached, dest)

    def prepare(self, manifest: dict[str, Any]) -> None:
        """Unpack the code snapshot and data, restore the newest checkpoint."""
        archive = self.dir / "snapshot.tar.gz"
        self.fetch_blob(manifest["snapshot"], archive)
        safe_extract(archive, self.src)
        archive.unlink()
        for ref in manifest.get("data", []):
            target = (self.src / ref["path"]).resolve()
            if not target.is_relative_to(self.src.resolve()):
                raise HubError(f"data path {ref['path']} leaves the working dir")
            target.parent.mkdir(parents=True, exist_ok=True)
            if ref.get("kind") == "dir":
                tmp = self.dir / "data.tar.gz"
                self.fetch_blob(ref["sha256"], tmp)
                safe_extract(tmp, target)
                tmp.unlink()
            else:
                self.fetch_blob(ref["sha256"], target)
        earlier = []
        for name in self.hub.list(P.ckpt_dir(self.job_id)):
            stem = name.removesuffix(".tar")
            if name.endswith(".tar") and stem.isdigit() and int(stem) < self.n:
                earlier.append(int(stem))
        if earlier:
            m = max(earlier)
            tmp = self.dir / "restore.tar"
            self.hub.get_file(P.ckpt(self.job_id, m), tmp)
            safe_extract(tmp, self.ckpt)
            tmp.unlink()
            self.status["restored_checkpoint_of_attempt"] = m
            log.info("%s.%d restored the checkpoint of attempt %d", self.job_id, self.n, m)

    def environment(self, manifest: dict[str, Any]) -> dict[str, str]:
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in manifest.get("env", [])})
        env.update(
            ORCH_OUTPUT_DIR=str(self.out),
            ORCH_CHECKPOINT_DIR=str(self.ckpt),
            ORCH_RUN_DIR=str(self.dir),
            ORCH_JOB_ID=self.job_id,
            ORCH_JOB_NAME=str(manifest.get("name", "")),
            ORCH_ATTEMPT=str(self.n),
            PYTHONUNBUFFERED="1",
            TF_FORCE_GPU_ALLOW_GROWTH="true",
        )
        if manifest.get("gpu") == "none":
            env["CUDA_VISIBLE_DEVICES"] = ""
        elif self.w.cfg.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.w.cfg.gpu
        if manifest.get("autotrack"):
            env["ORCH_AUTOTRACK"] = "1"
        return env

    def command(self, manifest: dict[str, Any]) -> list[str]:
        script = manifest["script"]
        args = [str(a) for a in manifest.get("args", [])]
        if manifest.get("autotrack"):
            return [sys.executable, "-u", "-m", "orchestrator.autotrack", script, *args]
        return [sys.executable, "-u", script, *args]

    def run_script(self, manifest: dict[str, Any]) -> int | None:
        """Run and watch the script. Returns its exit code, or None when the run was
        cancelled (status written) or superseded (Superseded raised)."""
        with open(self.log_path, "ab") as logf:
            proc = subprocess.Popen(
                self.command(manifest), cwd=self.src, env=self.environment(manifest),
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_pdeathsig,
            )
        self.put_status(phase=P.PHASE_RUNNING, pid=proc.pid)
        log.info("%s.%d running (pid %d)", self.job_id, self.n, proc.pid)
        next_check = next_push = time.monotonic()
        progress_mtime = ckpt_mtime = 0
        while True:
            code = proc.poll()
            if code is not None:
                self.forward_progress(force=True)
                self.upload_checkpoint(ckpt_mtime)
                return code
            now = time.monotonic()
            if now >= next_check:
                next_check = now + self.w.cfg.check_interval
                if not self.still_mine():
                    kill_tree(proc)
                    raise Superseded()
                if self.hub.exists(P.cancel(self.job_id)):
                    kill_tree(proc)
                    self.push_files(force=True)
                    self.put_status(phase=P.PHASE_CANCELLED, ended_at=time.time(),
                                    log_tail=tail(self.log_path))
                    return None
            if self.w._abort.is_set():
                kill_tree(proc)
                self.push_files(force=True)
                return None  # the daemon will see this worker stop and re-queue
            before = progress_mtime
            progress_mtime = self.forward_progress(mtime=progress_mtime)
            ckpt_mtime = self.upload_checkpoint(ckpt_mtime)
            # the log goes out on its interval, and with progress (at most every 2 s), so
            # a run that dies leaves its partial log on the hub, not nothing
            if now >= next_push or (progress_mtime != before and
                                    now >= next_push - self.w.cfg.log_interval + 2.0):
                next_push = now + self.w.cfg.log_interval
                self.push_files()
            time.sleep(self.w.cfg.poll_interval)

    def forward_progress(self, mtime: int = 0, force: bool = False) -> int:
        """Copy the script's progress.json (from orchestrator.keras) into status."""
        path = self.dir / "progress.json"
        try:
            current = path.stat().st_mtime_ns
        except FileNotFoundError:
            return mtime
        if current == mtime and not force:
            return mtime
        try:
            progress = json.loads(path.read_text())
        except (OSError, ValueError):
            return mtime  # mid-rename on some filesystems: next time
        first = progress.get("first_epoch")
        fields: dict[str, Any] = {"progress": progress}
        if first and "resumed_from_epoch" not in self.status:
            fields["resumed_from_epoch"] = first
        self.put_status(**fields)
        with self.w._lock:
            self.w._progress = progress
        return current

    def upload_checkpoint(self, mtime: int) -> int:
        """Send ``ckpt.tar`` (a consistent snapshot the callback made) if it is new."""
        path = self.dir / "ckpt.tar"
        try:
            current = path.stat().st_mtime_ns
        except FileNotFoundError:
            return mtime
        if current != mtime:
            self.hub.put_file(P.ckpt(self.job_id, self.n), path)
        return current

    def collect_outputs(self, manifest: dict[str, Any]) -> list[tuple[str, Path]]:
        files: list[tuple[str, Path]] = []
        for i, spec in enumerate(manifest.get("outputs") or [{"src": ".", "dest": ""}]):
            src = spec["src"]
            if src == ".":
                files += [(f"{i}/{name}", p) for name, p in tree_files(self.out)]
                continue
            for base in (self.out, self.src):
                candidate = (base / src).resolve()
                if candidate.exists() and candidate.is_relative_to(base.resolve()):
                    break
            else:
                raise FileNotFoundError(
                    f"output {src} was not produced (looked in $ORCH_OUTPUT_DIR and the "
                    "working dir)"
                )
            if candidate.is_dir():
                files += [(f"{i}/{candidate.name}/{n}", p) for n, p in tree_files(candidate)]
            else:
                files.append((f"{i}/{candidate.name}", candidate))
        return files

    def seal(self, manifest: dict[str, Any]) -> None:
        try:
            files = self.collect_outputs(manifest)
        except FileNotFoundError as exc:
            self.fail(str(exc))
            return
        if not files:
            self.fail("the script wrote no output (nothing in $ORCH_OUTPUT_DIR)")
            return
        tar_path = self.dir / "result.tar"
        with open(tar_path, "wb") as raw:
            writer = HashingWriter(raw)
            write_tar(writer, files, compress=False)  # type: ignore[arg-type]
        sealed = {
            "job_id": self.job_id,
            "attempt": self.n,
            "sha256": writer.hash.hexdigest(),
            "size": writer.size,
            "files": [{"name": n, "size": p.stat().st_size} for n, p in files],
            "sealed_at": time.time(),
        }
        if not self.still_mine():
            raise Superseded()
        self.hub.put_file(P.result_tar(self.job_id, self.n), tar_path)
        self.hub.put_json(P.result_json(self.job_id, self.n), sealed)
        self.put_status(phase=P.PHASE_SUCCEEDED, exit_code=0, ended_at=time.time(),
                        result_sha256=sealed["sha256"])
        log.info("%s.%d sealed (%d files, %d bytes)", self.job_id, self.n, len(files),
                 writer.size)
        shutil.rmtree(self.dir, ignore_errors=True)


def kill_tree(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the job's process group, then SIGKILL what is left after ``grace``."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; finish off stragglers in its group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        break


def parse_args(argv: list[str] | None = None) -> WorkerConfig:
    p = argparse.ArgumentParser(prog="orch worker", description=__doc__.split("\n\n")[0])
    p.add_argument("--hub", required=True, help="hub folder (or URL) to work for")
    p.add_argument("--name", default=socket.gethostname(), help="worker name (display)")
    p.add_argument("--kind", default=None,
                   help="local | remote | colab | ssh (default: local for a folder hub, "
                        "else remote)")
    p.add_argument("--credentials", default=None,
                   help="Drive credentials file (default: $ORCH_DRIVE_CREDENTIALS)")
    p.add_argument("--poll", type=float, default=None,
                   help="seconds between inbox checks (default 0.2 on a folder, 2 on Drive)")
    p.add_argument("--work-dir", default=None, help="scratch folder for runs")
    p.add_argument("--burst", action="store_true", help="exit when the inbox is empty")
    p.add_argument("--idle-timeout", type=float, default=60.0, help="exit after S idle")
    p.add_argument("--heartbeat", type=float, default=None,
                   help="heartbeat interval in seconds (default 1 on a folder, 5 on Drive)")
    p.add_argument("--gpu", default=None, help="CUDA device index this worker owns")
    p.add_argument("--gpu-name", default=None)
    p.add_argument("--session-hours", type=float, default=None)
    p.add_argument("--job", default=None, help="run this one job, then exit")
    p.add_argument("--id", default="", help="fixed worker id (default: NAME-<random>)")
    a = p.parse_args(argv)
    work = Path(a.work_dir) if a.work_dir else Path.home() / ".cache" / "orch" / "work"
    remote = a.hub.startswith("drive:")
    return WorkerConfig(
        hub=a.hub, name=a.name, work_dir=work, kind=a.kind or ("remote" if remote else "local"),
        burst=a.burst, credentials=a.credentials,
        poll_interval=a.poll if a.poll is not None else (2.0 if remote else 0.2),
        check_interval=5.0 if remote else 1.0, log_interval=10.0 if remote else 1.0,
        heartbeat_interval=a.heartbeat or (5.0 if remote else 1.0),
        idle_timeout=a.idle_timeout, gpu=a.gpu,
        gpu_name=a.gpu_name, session_hours=a.session_hours, only_job=a.job, worker_id=a.id,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    try:
        cfg = parse_args(argv)
        worker = Worker(cfg)
    except OrchError as exc:
        print(f"orch worker: error: {exc}", file=sys.stderr)
        return exc.exit_code
    signal.signal(signal.SIGTERM, lambda *_: worker.request_stop(now=False))
    signal.signal(signal.SIGINT, lambda *_: worker.request_stop(now=True))
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
