"""What orch does on an SSH host, over its :class:`~orchestrator.ssh.HostLink`:
probe it, install orch there, and the command that starts a worker.

The host's folder (``workdir``, private: mode 0700) holds ``hub/`` (the host's
hub), ``orch-SHA/`` (this orch, unpacked from the wheel Colab installs too; no pip,
nothing from the network), ``secret/key`` (the project's key, 0600, written to a
temporary name then renamed: never readable by others, never in a hub), ``work/``
(runs' scratch) and ``logs/``. Commands run in the login shell, which must be a
POSIX ``sh`` (bash, dash, zsh).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shlex
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from ..errors import ProtocolError
from ..hosts import Host, HostStatus, Slot
from ..logs import get_logger

if TYPE_CHECKING:
    import paramiko

    from ..config import Settings
    from ..ssh import HostLink

log = get_logger(__name__)
MIN_PYTHON = (3, 11)

# Run on the host with its Python: what it has, as one JSON line. argv[1]: workdir.
PROBE = r"""
import json, os, shutil, subprocess, sys
from importlib import metadata, util
work = os.path.abspath(os.path.expanduser(sys.argv[1]))
os.makedirs(work, mode=0o700, exist_ok=True)
for sub in ("hub", "work", "logs", "secret"):
    os.makedirs(os.path.join(work, sub), mode=0o700, exist_ok=True)
    os.chmod(os.path.join(work, sub), 0o700)
tf = ""
if util.find_spec("tensorflow") is not None:
    for dist in ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly"):
        try:
            tf = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            tf = tf or "unknown version"
gpus = []
try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True,
                         timeout=20).stdout
    for line in out.splitlines():
        p = [x.strip() for x in line.split(",")]
        if len(p) == 3 and p[0].isdigit():
            try:
                mem = float(p[2])
            except ValueError:
                mem = None
            gpus.append({"index": p[0], "name": p[1], "memory_mb": mem})
except (OSError, subprocess.SubprocessError):
    pass
print(json.dumps({"python": "%d.%d.%d" % sys.version_info[:3], "tensorflow": tf,
                  "gpus": gpus, "free_mb": shutil.disk_usage(work).free / 2**20,
                  "home": work}))
"""

UNPACK = ("import sys, zipfile, os; d = sys.argv[2]; zipfile.ZipFile(sys.argv[1]).extractall("
          "d + '.part'); os.replace(d + '.part', d)")


def probe(link: HostLink, min_free_mb: float) -> HostStatus:
    """Look at the host (one command; it also makes orch's folders there, 0700). The
    status names the first problem found; HostError when the host cannot be reached."""
    from ..ssh import HostError

    host = link.host
    code, out, err = link.run(f"{shlex.quote(host.python)} -c {shlex.quote(PROBE)} "
                              f"{shlex.quote(host.workdir)}", timeout=60)
    now = time.time()
    if code != 0:
        why = (f"no Python at {host.python!r} (set it with `orch hosts add … --python PATH`)"
               if code == 127 else f"the probe failed: {(err or out).strip()[-300:]}")
        return HostStatus(name=host.name, checked_at=now, problem=f"host {host.name}: {why}")
    try:
        raw = json.loads(out.strip().splitlines()[-1])
        status = HostStatus.from_dict({**raw, "name": host.name, "checked_at": now})
        version = tuple(int(x) for x in status.python.split(".")[:2])
    except (ValueError, IndexError, KeyError, TypeError, ProtocolError):
        raise HostError(f"host {host.name}: the probe printed something else than orch "
                        f"expects: {(out or err).strip()[-200:]!r}") from None
    problem = ""
    if version < MIN_PYTHON:
        problem = (f"{host.python} is Python {status.python}; orch needs 3.11 or newer "
                   "(give another with --python)")
    elif not status.tensorflow:
        problem = (f"TensorFlow is not installed for {host.python} (install it there: "
                   f"`{host.python} -m pip install tensorflow`, or give --python)")
    elif status.free_mb is not None and status.free_mb < min_free_mb:
        problem = (f"only {status.free_mb:.0f} MB free in {status.home} (orch wants "
                   f"{min_free_mb:.0f} MB: free some, or set host_min_free_mb)")
    return replace(status, problem=f"host {host.name}: {problem}") if problem else status


def install(link: HostLink, home: str, key: str) -> str:
    """This orch in ``home/orch-SHA`` (once per content) and the project's key in
    ``home/secret/key``; returns the folder to put on PYTHONPATH. Idempotent.
    HostError (one line) when the host refuses."""
    from ..ssh import HostError
    from .colab_notebook import build_wheel

    _, wheel = build_wheel()
    folder = f"{home}/orch-{hashlib.sha256(wheel).hexdigest()[:16]}"

    def put(sftp: paramiko.SFTPClient) -> bool:
        import stat

        secret = f"{home}/secret/.key.{secrets.token_hex(4)}"
        with sftp.open(secret, "w") as f:  # in a 0700 folder: nobody else can open it
            f.chmod(0o600)
            f.write(key)
        sftp.posix_rename(secret, f"{home}/secret/key")
        try:
            return not stat.S_ISDIR(sftp.stat(folder).st_mode or 0)
        except OSError:
            with sftp.open(f"{folder}.whl", "wb") as f:
                f.write(wheel)
            return True

    try:
        new = link.call("installing orch", put)
    except OSError as exc:
        raise HostError(f"host {link.host.name}: cannot write to {home}: "
                        f"{exc.strerror or exc or 'refused (is its disk full?)'}") from None
    if new:
        wheel_file = shlex.quote(folder + ".whl")
        code, out, err = link.run(f"{shlex.quote(link.host.python)} -c {shlex.quote(UNPACK)} "
                                  f"{wheel_file} {shlex.quote(folder)} && rm -f {wheel_file}",
                                  timeout=120)
        if code != 0:
            raise HostError(f"host {link.host.name}: cannot unpack orch in {folder}: "
                            f"{(err or out).strip()[-200:]}")
        log.info("installed orch on host %s in %s", link.host.name, folder)
    return folder


def worker_command(host: Host, home: str, folder: str, slot: Slot, wid: str,
                   settings: Settings) -> str:
    """The shell command that starts worker ``wid`` for ``slot`` detached from the
    SSH session (``setsid nohup``: it outlives a dropped connection) and prints its
    pid. Only the worker goes to the background, with no tie to the session's pipes."""
    args = ["-m", "orchestrator.worker", "--hub", f"{home}/hub", "--kind", "ssh",
            "--name", host.name, "--id", wid, "--work-dir", f"{home}/work",
            "--key-file", f"{home}/secret/key",
            "--idle-timeout", str(settings.worker_idle_timeout),
            "--heartbeat", str(settings.heartbeat_interval)]
    if slot.gpu is not None:
        jobs = (settings.gpu_jobs or 4) if slot.gpu.memory_mb else 1
        args += ["--gpu", slot.gpu.index, "--gpu-name", slot.gpu.name, "--slots", str(jobs)]
        if slot.gpu.memory_mb:
            args += ["--gpu-mem", str(slot.gpu.memory_mb)]
    log_file = shlex.quote(f"{home}/logs/worker-{slot.name}.log")
    return (f"cd {shlex.quote(home)} || exit 1\n"
            f"PYTHONPATH={shlex.quote(folder)} setsid nohup {shlex.quote(host.python)} "
            f"{shlex.join(args)} > {log_file} 2>&1 < /dev/null &\n"
            "echo $!")


def log_tail(link: HostLink, home: str, slot: Slot) -> str:
    """The last lines of a slot's worker log on the host ("" if unreadable)."""
    try:
        _, out, _ = link.run(f"tail -n 3 {shlex.quote(f'{home}/logs/worker-{slot.name}.log')}",
                             timeout=20)
    except Exception:  # noqa: BLE001 - only for a message
        return ""
    return " | ".join(line.strip() for line in out.strip().splitlines())[-300:]
