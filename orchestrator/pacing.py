"""How often an idle worker talks to its hub.

Every inbox check and heartbeat of a worker on Drive is a request against the
account's quota, and a Colab worker may sit idle for hours. An idle worker on a
remote hub therefore slows down: its inbox checks back off from the configured
poll interval (fast right after a job, when the next assignment is likely) to
:data:`IDLE_POLL`, and its heartbeats go every :data:`IDLE_BEAT` seconds (the
heartbeat says so, so the daemon's lease and ``orch top`` allow for it). A busy
worker keeps its configured pace. On a folder hub nothing changes: checks cost no
quota there.

With a Drive hub's view refreshed at most once per check, an idle worker makes
about one request every few seconds (one ``changes.list`` per check, one update
per heartbeat). Not thread-safe by itself: the worker's main loop owns one.
"""

from __future__ import annotations

from dataclasses import dataclass

IDLE_POLL = 5.0  # seconds between inbox checks of a long-idle worker on a remote hub
IDLE_BEAT = 15.0  # seconds between its heartbeats


@dataclass
class IdlePace:
    """The waits of one worker: ``poll`` and ``beat`` are its busy pace."""

    poll: float
    beat: float
    remote: bool
    empty_checks: int = 0

    def next_poll(self, idle: bool) -> float:
        """The wait before the next inbox check (call once per check)."""
        if not (idle and self.remote):
            self.empty_checks = 0
            return self.poll
        self.empty_checks += 1
        return max(self.poll, min(IDLE_POLL, self.poll * 2 ** self.empty_checks))

    def beat_interval(self, idle: bool) -> float:
        """Seconds between heartbeats now."""
        return max(self.beat, IDLE_BEAT) if idle and self.remote else self.beat
