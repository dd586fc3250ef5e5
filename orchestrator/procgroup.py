"""Processes: a job's process group, started as a session of its own that dies with
the worker (Linux: ``PR_SET_PDEATHSIG``, even when the worker is killed with -9), and
killed whole (:func:`kill_tree`) on every path that ends an attempt, so no training
process and none of its helpers outlive the run; and whether a pid still runs
(:func:`pid_alive`, for the daemon, the CLI and the sandbox alike), and what
``/proc/PID/stat`` says of it (:func:`stat_fields`, :func:`start_ticks`). Stdlib only."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel SIGKILL the job if the worker dies (even by kill -9)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
except (OSError, AttributeError):  # pragma: no cover
    _PRCTL = None


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


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet collected, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = stat_fields(pid)
    return fields is None or fields[0] != "Z"


def stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (which may hold spaces
    and parentheses): ``[state, ppid, pgrp, ...]``, field 3 of proc(5) first. None when
    the process is gone or this system has no ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return fields or None


def start_ticks(pid: int | str) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc/PID/stat``
    field 22); None when it is gone or this system has no ``/proc``."""
    fields = stat_fields(pid)
    try:
        return None if fields is None else int(fields[19])
    except (IndexError, ValueError):
        return None
