"""A real terminal for tests: a tmux server on its own socket, one session of a
given size running an interactive bash, read back with ``capture-pane``.

The session's shell gets exactly the environment given (written to an rc file,
with a known prompt), so a test types real commands and sees what a user sees.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.conftest import process_table

PROMPT = "test-shell$ "


def tmux_available() -> bool:
    return shutil.which("tmux") is not None


class Tmux:
    """One tmux server (socket ``orch-test-…``, unique per instance); :meth:`kill`
    stops it and every process of its session."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.socket = f"orch-test-{uuid.uuid4().hex[:12]}"
        folder.mkdir(parents=True, exist_ok=True)

    def cmd(self, *args: str) -> str:
        proc = subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, timeout=20)
        if proc.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def start(self, width: int, height: int, cwd: Path, env: dict[str, str]) -> None:
        """A detached session of ``width`` x ``height`` running bash in ``cwd``."""
        rc = self.folder / "bashrc"
        lines = [f"export {k}={shlex.quote(v)}" for k, v in env.items()
                 if k.isidentifier() and k not in ("PS1", "PROMPT_COMMAND")]
        rc.write_text("\n".join([*lines, f"PS1={shlex.quote(PROMPT)}", "unset PROMPT_COMMAND",
                                 f"cd {shlex.quote(str(cwd))}"]) + "\n")
        self.cmd("new-session", "-d", "-x", str(width), "-y", str(height),
                 f"bash --noprofile --rcfile {shlex.quote(str(rc))} -i")
        self.wait(lambda s: PROMPT.strip() in s, 20, "the shell's prompt")

    def record(self, path: Path) -> None:
        """Append everything the pane's programs write (raw bytes) to ``path``."""
        self.cmd("pipe-pane", "-o", f"cat >> {shlex.quote(str(path))}")

    def type(self, line: str) -> None:
        """Type ``line`` and Enter."""
        self.cmd("send-keys", "-l", line)
        self.cmd("send-keys", "Enter")

    def keys(self, *keys: str) -> None:
        """Press keys (tmux names: ``q``, ``Up``, ``Down``, ``Escape``…)."""
        self.cmd("send-keys", *keys)

    def foreground_pid(self) -> int:
        """The pid of the program the pane's shell runs now (the shell's if none)."""
        shell = int(self.cmd("display-message", "-p", "#{pane_pid}").strip())
        return next((pid for pid, fields in process_table().items()
                     if fields[1] == str(shell)), shell)

    def screen(self) -> str:
        """What the pane shows now, one line per row (trailing spaces dropped)."""
        return self.cmd("capture-pane", "-p")

    def wait(self, predicate: Callable[[str], object], timeout: float, message: str) -> str:
        """The screen, once ``predicate(screen)`` holds; fails after ``timeout`` s."""
        from tests.conftest import wait_for

        found: list[str] = []

        def check() -> bool:
            found[:] = [self.screen()]
            return bool(predicate(found[0]))

        try:
            wait_for(check, timeout=timeout, interval=0.2, message=message)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- screen ---\n{found[0] if found else ''}") from None
        return found[0]

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=20)
