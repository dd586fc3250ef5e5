"""A local fake of the Google Drive v3 REST API for tests, with injectable faults.

The real google-api-python-client talks to it (``build_service(url=fake.url)``).
See :class:`FakeDrive` for the in-process API, ``python -m orchestrator.sandbox.drive`` for
a standalone server, and the modules: ``server`` (HTTP), ``routes``, ``params``
(request parameters), ``state`` (files, changes, sessions), ``records``, ``metadata``,
``listing``, ``query`` (the ``q`` language), ``fields`` (``fields``
selections), ``uploads`` (wire formats), ``auth`` (tokens), ``faults``.
"""

from .errors import DriveError
from .fake import FakeDrive, Stats
from .faults import KINDS as FAULT_KINDS
from .faults import Faults
from .records import ROOT_ID
from .resources import FOLDER_MIME
from .routes import route_label

__all__ = ["FAULT_KINDS", "FOLDER_MIME", "ROOT_ID", "DriveError", "FakeDrive", "Faults",
           "Stats", "route_label"]
