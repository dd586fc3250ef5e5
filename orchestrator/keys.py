"""Single key presses from a terminal, for `orch top`.

:func:`keypresses` puts the terminal in cbreak mode (keys arrive one at a time,
without Enter, not echoed; Ctrl-C still interrupts) and always restores it: on a
normal exit, on an exception, and on SIGTERM (:func:`sigterm_exits` turns it into
``SystemExit(143)`` so the ``finally`` clauses run; `orch top` without keys uses it
too, so the screen it took is given back). POSIX terminals only; callers check
:func:`interactive` first.
"""

from __future__ import annotations

import os
import select
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TextIO

#: Escape sequences of the keys `orch top` knows, by the name it uses.
SEQUENCES = {"\x1b[A": "up", "\x1b[B": "down", "\x1bOA": "up", "\x1bOB": "down",
             "\r": "enter", "\n": "enter", "\x1b": "escape"}


def interactive(stdin: TextIO | None = None, stdout: TextIO | None = None) -> bool:
    """Whether keys can be read: stdin and stdout are terminals, on POSIX."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    try:
        return os.name == "posix" and stdin.isatty() and stdout.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


class Keys:
    """Reads key presses from the file descriptor ``fd`` (in cbreak mode). Keys
    that arrive together (typed ahead, pasted) are returned one by one."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending: list[str] = []

    def read(self, timeout: float) -> str | None:
        """The next key within ``timeout`` seconds: a character, or a name of
        :data:`SEQUENCES` ("up", "down", "enter", "escape"); None if none came."""
        if not self.pending:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
            if ready:
                self.pending = split_keys(os.read(self.fd, 64).decode("utf-8", "replace"))
        return self.pending.pop(0) if self.pending else None


def split_keys(data: str) -> list[str]:
    """``"jj\x1b[A"`` → ``["j", "j", "up"]``; escape sequences orch does not use
    are dropped."""
    keys: list[str] = []
    i = 0
    while i < len(data):
        if data[i] == "\x1b":
            seq = data[i:i + 3]
            if seq in SEQUENCES:
                keys.append(SEQUENCES[seq])
                i += 3
                continue
            j = i + 1  # an unknown sequence: skip ESC [ params final-byte
            if j < len(data) and data[j] in "[O":
                j += 1
                while j < len(data) and not data[j].isalpha() and data[j] != "~":
                    j += 1
                i = j + 1
                continue
            keys.append("escape")
            i += 1
            continue
        keys.append(SEQUENCES.get(data[i], data[i]))
        i += 1
    return keys


@contextmanager
def sigterm_exits() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``SystemExit(143)`` (so ``finally``
    clauses restore the terminal); the previous handler is put back after."""
    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    old_handler = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_handler)


@contextmanager
def keypresses(stdin: TextIO | None = None) -> Iterator[Keys]:
    """Cbreak mode on ``stdin`` (default: sys.stdin) while the block runs; the
    terminal's settings (and the SIGTERM handler) are restored however it ends."""
    import termios
    import tty

    fd = (stdin or sys.stdin).fileno()
    saved = termios.tcgetattr(fd)
    with sigterm_exits():
        try:
            tty.setcbreak(fd)
            yield Keys(fd)
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
