"""Standalone fake Drive: ``python -m orchestrator.sandbox.drive --port 8765``.

Prints the root URL (give it to ``build_service(url=...)`` or
``ORCH_DRIVE_ROOT_URL``) on the first line of stdout and serves until Ctrl-C or
SIGTERM. Control it over HTTP: ``POST /_fake/faults``, ``GET /_fake/stats``,
``POST /_fake/tokens`` (issue a token), ``POST /_fake/tokens/expire``,
``POST /_fake/tokens/revoke`` (``{"refresh_token"?}``: refreshing then gives invalid_grant),
``GET /_fake/files``, ``POST /_fake/reset``, ``GET|POST /_fake/config``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from .fake import FakeDrive


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m orchestrator.sandbox.drive", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--user-email", default="tester@example.com")
    p.add_argument("--token-ttl", type=float, default=3600.0)
    p.add_argument("--no-auth", action="store_true", help="accept requests without a token")
    p.add_argument("--seed", type=int, default=0, help="seed of the random faults")
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--fault-kinds", default="", help="comma-separated, e.g. 500,503,drop")
    p.add_argument("--lag", type=float, default=0.0, help="listing lag in seconds")
    p.add_argument("--print-token", action="store_true",
                   help="also print a ready access token on the second line")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.WARNING)
    fake = FakeDrive(a.host, a.port, user_email=a.user_email, token_ttl=a.token_ttl,
                     require_auth=not a.no_auth, seed=a.seed, start=False)
    fake.faults.configure(rate=a.fault_rate, lag=a.lag,
                          kinds=[k for k in a.fault_kinds.split(",") if k] or None)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also when started with SIGINT ignored (background)
    print(fake.url, flush=True)
    if a.print_token:
        print(fake.issue_token(), flush=True)
    try:
        fake.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        fake._server.close_connections()
        fake._server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
