"""The console entry point (``orch``, ``python -m orchestrator``).

It imports the CLI inside a guard: Ctrl-C at any moment of start-up (typer's import
takes a while) ends quietly with exit code 130, never with a traceback. Importing
this module costs nothing.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        sys.exit(130)
    cli_main()
