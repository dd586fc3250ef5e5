"""The Drive hub: the hub protocol over the Google Drive v3 API.

- :mod:`.api`: building the client for any endpoint, and requests with retries;
- :mod:`.index`: what the hub knows of its folder, kept by the changes feed;
- :mod:`.hub`: :class:`DriveHub`, the Hub interface on top of both;
- :mod:`.auth`: signing in (pydrive2), loading saved credentials.

Importing this package imports no Google library; each module imports what it
needs inside its functions.
"""

from .hub import DriveHub

__all__ = ["DriveHub"]
