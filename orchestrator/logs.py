"""One logger per module, without importing :mod:`logging` at CLI start-up.

``log = get_logger(__name__)`` returns a stand-in that imports logging the first
time it is used (importing logging costs ~3 ms; `orch status` must stay fast).
Until something configures logging, messages of WARNING and above go to stderr
as ``orch: message``.
"""

from __future__ import annotations

import sys
from typing import Any


class LazyLogger:
    """Forwards every call to ``logging.getLogger(name)``, created on first use."""

    def __init__(self, name: str) -> None:
        self._name = name

    def debug(self, *args: Any, **kwargs: Any) -> None:
        if "logging" in sys.modules:  # else nothing configured logging: INFO is dropped
            self.__getattr__("debug")(*args, **kwargs)

    def info(self, *args: Any, **kwargs: Any) -> None:
        if "logging" in sys.modules:
            self.__getattr__("info")(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        import logging

        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.WARNING, format="orch: %(message)s")
        return getattr(logging.getLogger(self._name), attr)


def get_logger(name: str) -> Any:
    return LazyLogger(name)
