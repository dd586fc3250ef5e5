"""How long a job will take, and how fast each kind of device trains: what the
placement needs, learned from the runs the store recorded.

A *workload* is a script with its arguments, ``--epochs`` taken out: two jobs of
one workload differ at most in how many epochs they train. A *device* names what a
worker trains on (``cpu:local``, ``gpu:Tesla T4``…). Durations are split into a
start-up overhead (process start, imports, data loading) and the epochs; epoch
times are kept in *reference seconds*, the time on a device of speed 1
(``cpu:local``), so that a run on a T4 teaches what a run on the CPU will take.

Where an estimate comes from, in order (:func:`estimate`):

1. ``--estimate`` given at submit: taken as the time on this machine's CPU;
2. history: earlier runs of the same workload, scaled by ``--epochs``;
3. probe: the job's own first epochs, once it has run them somewhere;
4. unknown: the job starts wherever it can start first, and is planned again once
   its first epoch tells how long it will take.

No I/O here: the store feeds the runs in. Standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

REFERENCE = "cpu:local"
#: Speeds assumed for devices nothing was learned about yet (a small Keras model;
#: relative to this machine's CPU). Learned figures replace them.
PRIOR_SPEEDS = {"cpu": 1.0, "gpu": 4.0, "t4": 4.0, "p100": 5.0, "v100": 7.0, "l4": 6.0,
                "a100": 10.0, "h100": 14.0, "h200": 14.0}
UNKNOWN_RUN = 600.0  # how long a job of unknown length is assumed to hold a worker


def positive(value: Any) -> float | None:
    """``value`` as a finite number above zero, else None (scripts report these
    figures: a zero, negative or NaN epoch time must not reach a logarithm)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 < value < math.inf else None


def run_device(gpu_need: Any, device: str) -> str:
    """The device a job runs on when placed on ``device``: a ``--cpu`` job runs on
    the machine's CPU even where there is a GPU (counted at this machine's CPU
    speed)."""
    return REFERENCE if getattr(gpu_need, "value", gpu_need) == "none" else device


def median(values: Iterable[float]) -> float:
    """The median (the statistics module costs CLI start-up 6 ms)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of nothing")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def workload(script: str, args: Sequence[str]) -> tuple[str, int | None]:
    """``(key, epochs)``: the script and its arguments without ``--epochs N`` (the
    key), and N if it was given."""
    rest: list[str] = []
    epochs = None
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == "--epochs" and i + 1 < len(args) and args[i + 1].isdigit():
            epochs, skip = int(args[i + 1]), True
        elif arg.startswith("--epochs=") and arg[9:].isdigit():
            epochs = int(arg[9:])
        else:
            rest.append(arg)
    return " ".join([script, *rest]), epochs


def device_of(kind: str, gpu: bool, gpu_name: str | None) -> str:
    """The device class of a worker: its GPU's model, or its kind's CPU."""
    if gpu:
        return f"gpu:{gpu_name or 'unknown'}"
    return f"cpu:{'local' if kind == 'local' else kind}"


def prior_speed(device: str) -> float:
    kind, _, name = device.partition(":")
    if kind == "cpu":
        return 1.0 if device == REFERENCE else 0.8  # someone else's CPU: assume a bit slower
    lowered = name.lower()
    return next((v for k, v in PRIOR_SPEEDS.items() if k in lowered and k != "gpu"),
                PRIOR_SPEEDS["gpu"])


@dataclass(frozen=True)
class Run:
    """One finished attempt, as the store recorded it."""

    workload: str
    device: str
    epochs: int | None
    epoch_seconds: float | None  # a typical epoch's wall time on ``device``
    seconds: float  # from start to end of the script
    gpu_mem_mb: float | None = None


def learn_speeds(runs: Iterable[Run], prior_weight: float = 0.5) -> dict[str, float]:
    """Each device's speed relative to the reference (``cpu:local`` = 1).

    Workloads that ran on several devices tell how those devices compare (the ratio
    of their typical epoch times); the speeds that agree best with every such
    comparison are found by a few rounds of averaging in log space, each device also
    pulled a little (``prior_weight``) towards its prior so one noisy run cannot
    send it far. Devices no workload compares keep their prior."""
    typical: dict[str, dict[str, float]] = {}
    by_workload: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        per_epoch = positive(r.epoch_seconds)
        if per_epoch is not None:
            by_workload.setdefault(r.workload, {}).setdefault(r.device, []).append(per_epoch)
    for key, per_device in by_workload.items():
        typical[key] = {d: median(v) for d, v in per_device.items()}
    devices = {d for per in typical.values() for d in per} | {REFERENCE}
    logs = {d: math.log(prior_speed(d)) for d in devices}
    for _ in range(50):
        for d in devices - {REFERENCE}:
            votes = [logs[e] + math.log(per[e] / per[d]) for per in typical.values()
                     if d in per for e in per if e != d]
            if votes:
                logs[d] = (sum(votes) + prior_weight * math.log(prior_speed(d))) / (
                    len(votes) + prior_weight)
    return {d: math.exp(v) for d, v in logs.items()}


def speed(speeds: dict[str, float], device: str) -> float:
    return speeds.get(device) or prior_speed(device)


@dataclass(frozen=True)
class Estimate:
    """How long a job takes: ``overhead`` seconds (on any device) plus ``epochs`` of
    ``epoch_ref`` reference seconds each; or ``total_ref`` reference seconds in all
    (an explicit --estimate). ``source`` says where it came from."""

    source: str
    epochs: int | None = None
    epoch_ref: float | None = None
    overhead: float = 0.0
    total_ref: float | None = None
    done_epochs: int = 0  # already trained (a running job's progress)

    @property
    def known(self) -> bool:
        return self.total_ref is not None or (self.epochs is not None
                                              and self.epoch_ref is not None)

    def seconds_at(self, device_speed: float) -> float | None:
        """Seconds the rest of the job takes on a device of that speed (None: unknown)."""
        if self.total_ref is not None:
            return self.total_ref / device_speed
        if self.epochs is None or self.epoch_ref is None:
            return None
        left = max(0, self.epochs - self.done_epochs)
        return self.overhead + left * self.epoch_ref / device_speed


def estimate(script: str, args: Sequence[str], explicit: float | None,
             history: Sequence[Run], speeds: dict[str, float],
             progress: dict[str, Any] | None = None, device: str | None = None
             ) -> Estimate:
    """The best estimate for a job (see the module's docstring for the order).
    ``progress`` and ``device``: what the job reported so far and where it runs."""
    if explicit:
        return Estimate(source=f"--estimate ({explicit:.0f} s on this machine's CPU)",
                        total_ref=explicit)
    key, epochs = workload(script, args)
    done = int(progress.get("completed_epochs") or 0) if progress else 0
    per_epoch = positive(progress.get("epoch_seconds")) if progress else None
    total = progress.get("epochs") if progress else None
    if device and per_epoch is not None and isinstance(total, int) and total > 0:
        return Estimate(source=f"probe ({done} epoch(s) of {total} at {per_epoch:.1f} s on "
                               f"{device})", epochs=total,
                        epoch_ref=per_epoch * speed(speeds, device), done_epochs=done)
    mine = [(r, r.epochs, per) for r in history if r.workload == key and r.epochs
            and r.epochs > 0 and (per := positive(r.epoch_seconds)) is not None]
    if mine:
        refs = [per * speed(speeds, r.device) for r, _, per in mine]
        overheads = [max(0.0, r.seconds - n * per) for r, n, per in mine]
        past_epochs = int(median(n for _, n, _ in mine))
        n = epochs or past_epochs
        scaled = f", scaled to {n} epochs" if n != past_epochs else ""
        return Estimate(source=f"history ({len(mine)} run(s) of {key!r}{scaled})", epochs=n,
                        epoch_ref=median(refs),
                        overhead=median(overheads),
                        done_epochs=done)
    return Estimate(source="unknown: it starts where it can start first, and its first "
                           "epoch tells how long it takes")
