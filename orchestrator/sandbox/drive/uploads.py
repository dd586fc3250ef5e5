"""Upload wire formats: multipart/related bodies and ``Content-Range`` headers."""

from __future__ import annotations

import base64
import json
import re
from itertools import pairwise
from typing import Any

from .errors import DriveError, bad_request


def parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, Any], bytes, str | None]:
    """Split a ``multipart/related`` upload into (metadata, media, media content type).

    Accepts CRLF or LF line endings (googleapiclient writes LF) and the
    ``binary`` or ``base64`` transfer encodings.
    """
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise bad_request("Missing multipart boundary.")
    delim = b"--" + m.group(1).encode()
    starts = []
    i = body.find(delim)
    while i != -1:
        if i == 0 or body[i - 1:i] == b"\n":
            starts.append(i)
        i = body.find(delim, i + 1)
    parts: list[tuple[dict[str, str], bytes]] = []
    for a, b in pairwise(starts):
        seg = body[a + len(delim):b]
        nl = seg.find(b"\n")
        seg = seg[nl + 1:] if nl != -1 else b""
        if seg.endswith(b"\r\n"):
            seg = seg[:-2]
        elif seg.endswith(b"\n"):
            seg = seg[:-1]
        parts.append(_split_part(seg))
    if len(parts) != 2 or not body[starts[-1]:].startswith(delim + b"--"):
        raise bad_request("Multipart upload must have exactly two parts: metadata and media.")
    (_, meta_raw), (media_headers, media) = parts
    try:
        meta = json.loads(meta_raw.decode("utf-8") or "{}")
    except ValueError:
        raise DriveError(400, "parseError", "Invalid JSON payload received.") from None
    if media_headers.get("content-transfer-encoding", "").lower() == "base64":
        media = base64.b64decode(media)
    return meta, media, media_headers.get("content-type")


def _split_part(seg: bytes) -> tuple[dict[str, str], bytes]:
    if seg.startswith(b"\r\n"):
        return {}, seg[2:]
    if seg.startswith(b"\n"):
        return {}, seg[1:]
    m = re.search(rb"\r?\n\r?\n", seg)
    if not m:
        return {}, seg
    headers: dict[str, str] = {}
    for line in seg[:m.start()].decode("latin-1").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return headers, seg[m.end():]


def parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``bytes a-b/T`` → (a, b, T); ``*`` parts are None; a missing header → all None."""
    if not value:
        return None, None, None
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", value)
    if not m:
        raise bad_request(f"Invalid Content-Range header: {value}")
    a = int(m.group(1)) if m.group(1) is not None else None
    b = int(m.group(2)) if m.group(2) is not None else None
    total = None if m.group(3) == "*" else int(m.group(3))
    if a is not None and b is not None and b < a:
        raise bad_request(f"Invalid Content-Range header: {value}")
    return a, b, total


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """A download ``Range: bytes=a-b`` (or ``a-``, ``-n``) as inclusive (start, end);
    None if absent or unparseable (whole content); DriveError 416 if unsatisfiable."""
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", value or "")
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if m.group(1):
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else size - 1
    else:
        start = max(0, size - int(m.group(2)))
        end = size - 1
    end = min(end, size - 1)
    if start >= size or end < start:
        raise DriveError(416, "requestedRangeNotSatisfiable",
                         "Request range not satisfiable", location="Range",
                         location_type="header", headers={"Content-Range": f"bytes */{size}"})
    return start, end
