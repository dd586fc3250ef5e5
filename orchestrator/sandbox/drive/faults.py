"""Injectable faults: error responses, dropped connections, listing lag.

Faults apply to API requests only (``/drive/...``, ``/upload/...``, and the
``/resumable/...`` alias), never to ``/token`` or ``/_fake/...``; the token
endpoint has its own: :meth:`Faults.token_outage`.

Outages: :meth:`Faults.outage` fails *every* API request with one kind (``503`` or
``drop``, say) for a number of seconds, then the service works again, as in a
Drive outage. :meth:`Faults.token_outage` does the same to ``POST /token`` with
``503``/``500`` (Google's token endpoint down), ``drop``, or ``invalid_grant``
(400: the refresh token expired or was revoked).
Per request, the first queued :meth:`Faults.fail_next` entry whose ``match``
fits wins; otherwise, with ``rate > 0``, one draw from a ``random.Random(seed)``
decides whether to fail and a second which of ``kinds``: the sequence is the
same on every run for the same seed and order of requests.

Kinds (see :data:`KINDS`): ``rateLimitExceeded`` and ``userRateLimitExceeded``
(403, domain usageLimits), ``429``, ``500``, ``503`` (reason backendError) and
``drop``: the server reads half of the request body (none if there is no body),
then resets the connection (TCP RST) without answering; ``lost``: the server
carries the request out (a create creates) and then resets the connection
instead of answering: a lost answer, which makes a retried create a duplicate;
``storageQuotaExceeded``: 403 (domain usageLimits), the owner's storage is full
(Drive answers uploads so; it is not a rate limit, and retrying does not help).
Random faults (``rate``) draw only from :data:`TRANSIENT` unless ``kinds`` says
otherwise. For a resumable
upload chunk the bytes read are discarded, so the session holds nothing of that
chunk, unless ``drop_keeps_partial`` is set, in which case the session keeps
exactly the first half it read (an offset that is not a multiple of 256 KiB).
"""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

#: kind -> (HTTP status, domain, reason, message); ``drop`` has no response.
KINDS: dict[str, tuple[int, str, str, str] | None] = {
    "rateLimitExceeded": (403, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
    "userRateLimitExceeded": (403, "usageLimits", "userRateLimitExceeded",
                              "User Rate Limit Exceeded"),
    "429": (429, "usageLimits", "rateLimitExceeded", "Too Many Requests"),
    "500": (500, "global", "backendError", "Backend Error"),
    "503": (503, "global", "backendError", "Service Unavailable"),
    "drop": None,
    "lost": None,
    "storageQuotaExceeded": (403, "usageLimits", "storageQuotaExceeded",
                             "The user's Drive storage quota has been exceeded."),
}
#: token endpoint faults: error answers (503, 500), a dropped connection, a lapsed grant
TOKEN_KINDS = ("503", "500", "drop", "invalid_grant")
#: the kinds random faults draw from by default: failures a retry gets past
TRANSIENT = ["rateLimitExceeded", "userRateLimitExceeded", "429", "500", "503", "drop"]
ALIASES = {"403": "rateLimitExceeded", "rate_limit": "rateLimitExceeded",
           "user_rate_limit": "userRateLimitExceeded", "quota": "storageQuotaExceeded",
           "lost_answer": "lost"}


def canonical_kind(kind: str) -> str:
    """The canonical name of ``kind`` (accepts ``"403"`` etc.); ValueError if unknown."""
    kind = ALIASES.get(str(kind), str(kind))
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
    return kind


@dataclass
class _Queued:
    remaining: int
    kind: str
    match: re.Pattern[str] | None


class Faults:
    """Fault settings of one fake Drive; safe to change while requests run.

    Attributes may be set directly (``fake.faults.lag = 2``) or through
    :meth:`configure` (which also reseeds).
    """

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self.rate = 0.0
        self.kinds: list[str] = list(TRANSIENT)
        self.lag = 0.0
        self.drop_keeps_partial = False
        self.seed = seed
        self._rng = random.Random(seed)
        self._queue: list[_Queued] = []
        self.injected: dict[str, int] = {}
        self._outage: tuple[float, str] | None = None  # (monotonic end, kind)
        self._token_outage: tuple[float, str] | None = None

    def configure(self, rate: float | None = None, kinds: list[str] | None = None,
                  seed: int | None = None, lag: float | None = None,
                  drop_keeps_partial: bool | None = None) -> None:
        """Change some settings; a given ``seed`` restarts the random sequence."""
        with self._lock:
            if rate is not None:
                if not 0.0 <= float(rate) <= 1.0:
                    raise ValueError("rate must be within [0, 1]")
                self.rate = float(rate)
            if kinds is not None:
                chosen = [canonical_kind(k) for k in kinds]
                if not chosen:
                    raise ValueError("kinds must not be empty")
                self.kinds = chosen
            if seed is not None:
                self.seed = int(seed)
                self._rng = random.Random(self.seed)
            if lag is not None:
                self.lag = max(0.0, float(lag))
            if drop_keeps_partial is not None:
                self.drop_keeps_partial = bool(drop_keeps_partial)

    def fail_next(self, n: int = 1, kind: str = "500", match: str | None = None) -> None:
        """Fail the next ``n`` API requests (whose ``"METHOD /path?query"`` matches
        the regular expression ``match``, if given) with ``kind``."""
        if n < 1:
            raise ValueError("n must be >= 1")
        entry = _Queued(n, canonical_kind(kind), re.compile(match) if match else None)
        with self._lock:
            self._queue.append(entry)

    def outage(self, seconds: float, kind: str = "503") -> None:
        """Fail every API request with ``kind`` for the next ``seconds`` (0: end it)."""
        kind = canonical_kind(kind)
        with self._lock:
            self._outage = (time.monotonic() + seconds, kind) if seconds > 0 else None

    def token_outage(self, seconds: float, kind: str = "503") -> None:
        """Fail every ``POST /token`` for the next ``seconds`` (0: end it) with ``kind``:
        one of :data:`TOKEN_KINDS`."""
        if kind not in TOKEN_KINDS:
            raise ValueError(f"unknown token fault {kind!r}; known: {', '.join(TOKEN_KINDS)}")
        with self._lock:
            self._token_outage = (time.monotonic() + seconds, kind) if seconds > 0 else None

    @staticmethod
    def _active(window: tuple[float, str] | None) -> str | None:
        return window[1] if window is not None and time.monotonic() < window[0] else None

    def outage_left(self) -> float:
        """Seconds of the API outage still to go (0 if none)."""
        with self._lock:
            return max(0.0, self._outage[0] - time.monotonic()) if self._outage else 0.0

    def token_fault(self) -> str | None:
        """The fault for a token request now (a kind of :data:`TOKEN_KINDS`), or None."""
        with self._lock:
            kind = self._active(self._token_outage)
            if kind is not None:
                key = f"token:{kind}"
                self.injected[key] = self.injected.get(key, 0) + 1
            return kind

    def clear(self) -> None:
        """No faults: rate 0, empty queue, no lag, the transient kinds, reseeded."""
        with self._lock:
            self.rate = 0.0
            self.kinds = list(TRANSIENT)
            self.lag = 0.0
            self.drop_keeps_partial = False
            self._queue.clear()
            self._rng = random.Random(self.seed)
            self._outage = self._token_outage = None

    def injected_counts(self, reset: bool = False) -> dict[str, int]:
        """How many faults of each kind were injected (optionally zeroing the counts)."""
        with self._lock:
            out = dict(self.injected)
            if reset:
                self.injected.clear()
            return out

    def pending(self) -> int:
        """How many queued failures are still to be injected."""
        with self._lock:
            return sum(q.remaining for q in self._queue)

    def decide(self, method: str, target: str) -> str | None:
        """The fault for this request (``target`` is the path with query), or None."""
        line = f"{method} {target}"
        with self._lock:
            kind: str | None = self._active(self._outage)
            for q in self._queue if kind is None else ():
                if q.match is None or q.match.search(line):
                    q.remaining -= 1
                    kind = q.kind
                    if q.remaining <= 0:
                        self._queue.remove(q)
                    break
            if kind is None and self.rate > 0 and self._rng.random() < self.rate:
                kind = self._rng.choice(self.kinds)
            if kind is not None:
                self.injected[kind] = self.injected.get(kind, 0) + 1
            return kind

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON (what ``GET /_fake/faults`` answers)."""
        with self._lock:
            return {"rate": self.rate, "kinds": list(self.kinds), "seed": self.seed,
                    "lag": self.lag, "drop_keeps_partial": self.drop_keeps_partial,
                    "pending": sum(q.remaining for q in self._queue),
                    "outage_left": max(0.0, self._outage[0] - time.monotonic())
                    if self._outage else 0.0,
                    "injected": dict(self.injected)}

    def apply_json(self, body: dict[str, Any]) -> None:
        """Apply a ``POST /_fake/faults`` document::

            {"clear": true, "rate": 0.1, "kinds": ["500", "drop"], "seed": 7, "lag": 2,
             "drop_keeps_partial": false,
             "fail_next": [{"n": 1, "kind": "drop", "match": "^PUT /upload/"}],
             "outage": {"seconds": 120, "kind": "503"},
             "token_outage": {"seconds": 30, "kind": "invalid_grant"}}
        """
        if body.get("clear"):
            self.clear()
        self.configure(rate=body.get("rate"), kinds=body.get("kinds"), seed=body.get("seed"),
                       lag=body.get("lag"), drop_keeps_partial=body.get("drop_keeps_partial"))
        nexts = body.get("fail_next") or []
        if isinstance(nexts, dict):
            nexts = [nexts]
        for item in nexts:
            self.fail_next(int(item.get("n", 1)), str(item.get("kind", "500")),
                           item.get("match"))
        for name, start in (("outage", self.outage), ("token_outage", self.token_outage)):
            spec = body.get(name)
            if isinstance(spec, dict):
                start(float(spec.get("seconds", 0)), str(spec.get("kind", "503")))
