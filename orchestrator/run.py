"""One attempt of one job on a worker: set up, run the script, watch, seal.

Writes, per the protocol, only what belongs to its attempt: the status, log,
metrics, checkpoint and result of ``runs/<job>/<n>/``. Before every write that
matters (and every second while the script runs) it checks that its assignment
is still in the worker's inbox; if the daemon withdrew it (the lease expired and
the job runs as a newer attempt), it kills the script and raises
:class:`SupersededError` without writing anything more.

Outages: while the hub is away the script trains on. What the run would send waits
on local disk, bounded: the newest ``progress.json`` (latest wins), the whole log
(appended to), the newest ``ckpt.tar`` (each checkpoint replaces the last); each is
marked sent only once the hub took it, so all of it goes out when the hub is back.
Hub calls are tried again with the worker's capped backoff (:mod:`.outage`) for as
long as the lease could still be valid; past that, the script is killed and
:class:`LeaseLapsedError` raised (the daemon re-queues the job). Whatever ends an
attempt, the script's whole process group is killed before the worker moves on.

Standard library plus orch's protocol, archive and hub code only (it runs in Colab).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from . import protocol as P
from .archive import HashingWriter, safe_extract, sha256_file, write_tar
from .atomic import temp_path
from .errors import (
    HubError,
    HubFullError,
    LeaseLapsedError,
    OrchError,
    SignatureError,
    SupersededError,
)
from .joblogs import tail
from .outputs import collect, only_logs, stats_of
from .packages import install, items_of, job_log_writer, tensorflow_version
from .procgroup import die_with_parent, kill_tree
from .signing import verify

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger(__name__)

T = TypeVar("T")


class AttemptRun:
    """One attempt of one job on this worker: set up, run, monitor, seal."""

    def __init__(self, worker: Worker, job_id: str, n: int, resume_from: int = 1,
                 lease: float = 120.0) -> None:
        """``resume_from``: restore only checkpoints of attempts from this one on
        (`orch retry --fresh` sets it to the new attempt: nothing to restore);
        ``lease``: seconds without a heartbeat reaching the hub after which the
        daemon has re-queued the job (the run then stops)."""
        self.w = worker
        self.lease = lease
        self.resume_from = resume_from
        self.hub = worker.hub
        self.job_id = job_id
        self.n = n
        self.dir = worker.work_dir / job_id / str(n)
        self.src = self.dir / "src"
        self.out = self.dir / "out"
        self.ckpt = self.dir / "ckpt"
        self.log_path = self.dir / "log.txt"
        self.status = P.RunStatus(job_id=job_id, attempt=n, worker_id=worker.id,
                                  phase=P.Phase.STARTING, started_at=time.time())
        self._sent: dict[str, float] = {}
        self._progress_mtime = 0  # of the progress.json and ckpt.tar the hub has
        self._ckpt_mtime = 0
        self._status_dirty = False  # a status change the hub has not taken yet
        self.baseline: dict[str, tuple[int, int]] = {}  # src files as the run got them
        self.packages: Path | None = None  # the job's extra packages (--pip), installed
        self.hub_full = False  # the hub's storage is full: checkpoints stay here

    # -- hub writes, fenced --

    def still_mine(self) -> bool:
        return self.hub.exists(P.inbox(self.w.id, self.job_id, self.n))

    def retry(self, fn: Callable[[], T]) -> T:
        """``fn()``, tried again through an outage (see :meth:`Worker.retry`)."""
        return self.w.retry(fn, self.lease)

    def put_status(self, **fields: Any) -> None:
        """Change the status and send it (if the send fails, the change is kept and
        the next send carries it)."""
        self.status = dataclasses.replace(self.status, **fields, updated=time.time())
        self._status_dirty = True
        self.hub.put_doc(P.status(self.job_id, self.n), self.status)
        self._status_dirty = False

    def fail(self, error: str, exit_code: int | None = None) -> None:
        self.retry(lambda: self.push_files(force=True))
        self.retry(lambda: self.put_status(phase=P.Phase.FAILED, error=error,
                                           exit_code=exit_code, log_tail=tail(self.log_path),
                                           ended_at=time.time()))
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

    def manifest(self) -> P.Manifest:
        """The job's manifest, checked: signed with the project's key, naming this job.
        OrchError (one line) for one that is missing, unreadable, or not the project's."""
        manifest = self.hub.get_doc(P.manifest(self.job_id), P.Manifest)
        if manifest is None:
            raise HubError("job manifest missing from the hub")
        verify(manifest, self.w.key)
        if manifest.job_id != self.job_id:
            raise SignatureError(f"the manifest of job {self.job_id} names job "
                                 f"{manifest.job_id}: refused")
        return manifest

    def execute(self) -> None:
        try:
            manifest = self.retry(self.manifest)
        except SupersededError:
            raise
        except OrchError as exc:
            log.warning("%s.%d: %s", self.job_id, self.n, exc)
            self.dir.mkdir(parents=True, exist_ok=True)
            self.fail(str(exc))
            return
        if self.retry(lambda: self.hub.exists(P.cancel(self.job_id))):
            self.retry(lambda: self.put_status(phase=P.Phase.CANCELLED, ended_at=time.time()))
            return
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.retry(lambda: self.put_status(phase=P.Phase.STARTING))
        try:
            self.retry(lambda: self.prepare_afresh(manifest))
        except SupersededError:
            raise
        except (OrchError, OSError) as exc:
            self.fail(f"could not set up the run: {exc}")
            return
        if not self.retry(self.still_mine):
            raise SupersededError()
        self.baseline = stats_of(self.src)
        code = self.run_script(manifest)
        if code is None:
            return  # cancelled or superseded; already handled
        # what the run left to send (its newest progress, checkpoint and log) goes now
        self.retry(lambda: self.forward_progress(force=True))
        self.retry(self.upload_checkpoint)
        self.retry(lambda: self.push_files(force=True))
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
            tmp = temp_path(cached)
            self.hub.get_file(P.blob(sha), tmp)
            got = sha256_file(tmp)
            if got != sha:
                tmp.unlink(missing_ok=True)
                raise HubError(f"blob {sha[:12]} arrived corrupt (sha256 {got[:12]})")
            os.replace(tmp, cached)
        shutil.copyfile(cached, dest)

    def prepare_afresh(self, manifest: P.Manifest) -> None:
        """:meth:`prepare` into empty folders (so it can be tried again)."""
        for d in (self.src, self.out, self.ckpt):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        self.prepare(manifest)

    def prepare(self, manifest: P.Manifest) -> None:
        """Unpack the code snapshot and data, restore the newest checkpoint."""
        archive = self.dir / "snapshot.tar.gz"
        self.fetch_blob(manifest.snapshot, archive)
        safe_extract(archive, self.src)
        archive.unlink()
        for ref in manifest.data:
            target = (self.src / ref.path).resolve()
            if not target.is_relative_to(self.src.resolve()):
                raise HubError(f"data path {ref.path} leaves the working dir")
            target.parent.mkdir(parents=True, exist_ok=True)
            if ref.kind == "dir":
                tmp = self.dir / "data.tar.gz"
                self.fetch_blob(ref.sha256, tmp)
                safe_extract(tmp, target)
                tmp.unlink()
            else:
                self.fetch_blob(ref.sha256, target)
        earlier = [n for n in map(P.parse_ckpt_name, self.hub.list(P.ckpt_dir(self.job_id)))
                   if n is not None and self.resume_from <= n <= self.n]  # n: its own, retaken
        if earlier:
            m = max(earlier)
            tmp = self.dir / "restore.tar"
            self.hub.get_file(P.ckpt(self.job_id, m), tmp)
            safe_extract(tmp, self.ckpt)
            tmp.unlink()
            self.status = dataclasses.replace(self.status, restored_checkpoint_of_attempt=m)
            log.info("%s.%d restored the checkpoint of attempt %d", self.job_id, self.n, m)
        items = items_of(manifest.env)
        if items:
            say = job_log_writer(self.log_path, f"{self.job_id}.{self.n}:")
            # beside the worker's scratch, not in it: a later worker of the same session
            # (a notebook run again) finds the packages installed
            self.packages = install(items, self.src, self.w.cfg.work_dir / "packages",
                                    say).path

    def environment(self, manifest: P.Manifest) -> dict[str, str]:
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in manifest.env})
        env.update(
            ORCH_OUTPUT_DIR=str(self.out),
            ORCH_CHECKPOINT_DIR=str(self.ckpt),
            ORCH_RUN_DIR=str(self.dir),
            ORCH_JOB_ID=self.job_id,
            ORCH_JOB_NAME=manifest.name,
            ORCH_ATTEMPT=str(self.n),
            PYTHONUNBUFFERED="1",
            # a GPU shared by several jobs: each takes memory as it needs it
            TF_FORCE_GPU_ALLOW_GROWTH="true",
            XLA_PYTHON_CLIENT_PREALLOCATE="false",
        )
        if manifest.gpu.value == "none":
            env["CUDA_VISIBLE_DEVICES"] = ""
        elif self.w.cfg.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.w.cfg.gpu
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the order nvidia-smi numbers GPUs in
        if manifest.autotrack:
            env["ORCH_AUTOTRACK"] = "1"
        if self.packages is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(self.packages), env.get("PYTHONPATH", "")) if p)
        return env

    def command(self, manifest: P.Manifest) -> list[str]:
        if manifest.autotrack:
            return [sys.executable, "-u", "-m", "orchestrator.autotrack", manifest.script,
                    *manifest.args]
        return [sys.executable, "-u", manifest.script, *manifest.args]

    def run_script(self, manifest: P.Manifest) -> int | None:
        """Run and watch the script. Returns its exit code, or None when the run was
        cancelled (status written) or superseded (SupersededError raised). Whatever
        ends the watching (an error too), the script is never left running."""
        with open(self.log_path, "ab") as logf:
            proc = subprocess.Popen(
                self.command(manifest), cwd=self.src, env=self.environment(manifest),
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        try:
            return self._watch(proc)
        finally:  # the leader, and anything it started in its group
            kill_tree(proc)

    def _watch(self, proc: subprocess.Popen[bytes]) -> int | None:
        """Watch the script until it exits (its code), is cancelled (None) or is
        superseded (SupersededError; LeaseLapsedError when the hub stayed away past
        the lease). Hub failures hold back the forwarding, never the script."""
        log.info("%s.%d running (pid %d)", self.job_id, self.n, proc.pid)
        cfg = self.w.cfg
        next_check = next_push = hold = time.monotonic()
        self.status = dataclasses.replace(self.status, phase=P.Phase.RUNNING, pid=proc.pid)
        self._status_dirty = True
        while True:
            code = proc.poll()
            if code is not None:
                return code
            if self.w.aborting():
                kill_tree(proc)
                with contextlib.suppress(HubError):
                    self.push_files(force=True)
                return None  # the daemon will see this worker stop and re-queue
            if self.w.outage.lease_lapsed(self.lease):
                kill_tree(proc)
                raise LeaseLapsedError(f"the hub was out of reach for longer than the lease "
                                       f"({self.lease:.0f} s)")
            now = time.monotonic()
            if now >= hold:
                try:
                    if now >= next_check:
                        if not self.still_mine():
                            kill_tree(proc)
                            raise SupersededError()
                        if self.hub.exists(P.cancel(self.job_id)):
                            kill_tree(proc)
                            self.retry(lambda: self.push_files(force=True))
                            self.retry(lambda: self.put_status(
                                phase=P.Phase.CANCELLED, ended_at=time.time(),
                                log_tail=tail(self.log_path)))
                            return None
                        next_check = now + cfg.check_interval
                    before = self._progress_mtime
                    self.forward_progress()
                    self.upload_checkpoint()
                    if self._status_dirty:
                        self.put_status()
                    # the log goes out on its interval, and with progress (at most every
                    # 2 s), so a run that dies leaves its partial log on the hub
                    if now >= next_push or (self._progress_mtime != before and
                                            now >= next_push - cfg.log_interval + 2.0):
                        self.push_files()
                        next_push = now + cfg.log_interval
                except HubError as exc:  # the script trains on; what is unsent waits
                    hold = time.monotonic() + self.w.outage.failed(exc)
            time.sleep(cfg.poll_interval)

    def forward_progress(self, force: bool = False) -> None:
        """Copy the script's progress.json (from orchestrator.keras) into status, if
        it changed since the hub last took it (the newest one wins)."""
        path = self.dir / "progress.json"
        try:
            current = path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if current == self._progress_mtime and not force:
            return
        try:
            progress = json.loads(path.read_text())
        except (OSError, ValueError):
            return  # mid-rename on some filesystems: next time
        if not isinstance(progress, dict):
            self._progress_mtime = current
            return
        first = progress.get("first_epoch")
        fields: dict[str, Any] = {"progress": progress}
        if isinstance(first, int) and first and self.status.resumed_from_epoch is None:
            fields["resumed_from_epoch"] = first
        self.w.report_progress(progress)
        self.put_status(**fields)
        self._progress_mtime = current

    def upload_checkpoint(self) -> None:
        """Send ``ckpt.tar`` (a consistent snapshot the callback made; each replaces
        the last) if the hub does not have this one yet."""
        path = self.dir / "ckpt.tar"
        try:
            current = path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if current == self._ckpt_mtime:
            return
        if not self.hub_full:
            try:
                self.hub.put_file(P.ckpt(self.job_id, self.n), path)
                self._ckpt_mtime = current
                return
            except HubFullError as exc:  # retrying does not help; training goes on
                self.hub_full = True
                log.warning("%s; checkpoints of %s.%d stay on this machine, at %s", exc,
                            self.job_id, self.n, self.kept_checkpoint())
        self.keep_checkpoint(path)
        self._ckpt_mtime = current

    def kept_checkpoint(self) -> Path:
        """Where a checkpoint the hub had no room for is kept (outside the scratch
        folder, which goes when the worker exits)."""
        return self.w.cfg.work_dir / "kept" / f"{self.job_id}.{self.n}.ckpt.tar"

    def keep_checkpoint(self, path: Path) -> None:
        """Copy ``path`` to :meth:`kept_checkpoint`, atomically (the newest replaces
        the one before)."""
        dest = self.kept_checkpoint()
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(dest)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def collect_outputs(self, manifest: P.Manifest) -> list[tuple[str, Path]]:
        return collect(manifest.outputs, self.out, self.src, self.baseline)

    def seal(self, manifest: P.Manifest) -> None:
        try:
            files = self.collect_outputs(manifest)
        except FileNotFoundError as exc:
            self.fail(str(exc))
            return
        if only_logs(files):
            self.fail("the script wrote no output (nothing in $ORCH_OUTPUT_DIR, and no model "
                      "file saved in its working dir)")
            return
        tar_path = self.dir / "result.tar"
        with open(tar_path, "wb") as raw:
            writer = HashingWriter(raw)
            write_tar(writer, files, compress=False, keep_mtime=True)  # type: ignore[arg-type]
        tf = tensorflow_version(self.environment(manifest), self.src)
        sealed = P.Seal(job_id=self.job_id, attempt=self.n, sha256=writer.hash.hexdigest(),
                        size=writer.size, sealed_at=time.time(),
                        files=tuple(P.SealedFile(n, p.stat().st_size) for n, p in files),
                        tensorflow=tf)
        if not self.retry(self.still_mine):
            raise SupersededError()
        self.retry(lambda: self.hub.put_file(P.result_tar(self.job_id, self.n), tar_path))
        self.retry(lambda: self.hub.put_doc(P.result_json(self.job_id, self.n), sealed))
        progress = {**self.status.progress, **({"tensorflow": tf} if tf else {})}
        self.retry(lambda: self.put_status(phase=P.Phase.SUCCEEDED, exit_code=0,
                                           ended_at=time.time(), result_sha256=sealed.sha256,
                                           progress=progress))
        log.info("%s.%d sealed (%d files, %d bytes)", self.job_id, self.n, len(files),
                 writer.size)
        shutil.rmtree(self.dir, ignore_errors=True)
