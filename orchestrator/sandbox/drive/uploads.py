"""Uploads: the wire formats (multipart/related bodies, ``Content-Range`` headers)
and the upload methods (media, multipart, resumable sessions and their chunks).
Callers hold :attr:`DriveState.lock`."""

from __future__ import annotations

import base64
import json
import re
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from . import fields as F
from .control import Reply
from .errors import DriveError, bad_request
from .params import fields_of, file_reply, json_body, parents_of
from .records import CHUNK_GRANULARITY, UploadSession
from .shared import check_access

if TYPE_CHECKING:
    from email.message import Message

    from .state import DriveState


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


def start_upload(st: DriveState, file_id: str | None, params: dict[str, str],
                 headers: Message, body: bytes, host: str) -> Reply:
    """files.create/update on the upload URL: a ``media`` or ``multipart`` upload
    whole, or a ``resumable`` session started (its URL on ``host``)."""
    kind = params.get("uploadType", "")
    F.select(fields_of(params), F.FILE, F.DEFAULT_FILE)  # reject bad fields up front
    adds, removes = params.get("addParents", ""), params.get("removeParents", "")
    check_access(st, [file_id or "", *adds.split(",")], params)
    if kind == "media":
        mime = headers.get("Content-Type")
        if file_id is None:
            rec = st.create({}, body, mime)
        else:
            rec = st.update(file_id, {}, body, adds, removes)
        return file_reply(st, rec.id, params)
    if kind == "multipart":
        meta, media, mime = parse_multipart(body, headers.get("Content-Type", ""))
        check_access(st, parents_of(meta), params)
        if file_id is None:
            rec = st.create(meta, media, mime)
        else:
            rec = st.update(file_id, meta, media, adds, removes)
        return file_reply(st, rec.id, params)
    if kind == "resumable":
        raw_total = headers.get("X-Upload-Content-Length")
        try:
            total = int(raw_total) if raw_total not in (None, "") else None
        except ValueError:
            raise bad_request("Invalid X-Upload-Content-Length header.") from None
        keep = {k: v for k, v in params.items() if k in (
            "fields", "addParents", "removeParents", "supportsAllDrives",
            "keepRevisionForever")}
        meta = json_body(body)
        check_access(st, parents_of(meta), params)
        s = st.new_session(file_id, meta, keep,
                           headers.get("X-Upload-Content-Type"), total)
        path = "/upload/drive/v3/files" + (f"/{file_id}" if file_id else "")
        location = f"http://{host}{path}?uploadType=resumable&upload_id={s.id}"
        return Reply(200, b"", {"Location": location, "X-GUploader-UploadID": s.id})
    raise bad_request(f"Invalid uploadType: '{kind}'. Use media, multipart or resumable.")

def upload_chunk(st: DriveState, params: dict[str, str], headers: Message, body: bytes
                 ) -> Reply:
    """A PUT to a resumable session: its bytes so far (308) or, once all are in,
    the file created or updated; a status query (``bytes */TOTAL``) too."""
    s = st.session(params["upload_id"])
    start, end, total = parse_content_range(headers.get("Content-Range"))
    if s.result_id is not None:
        return file_reply(st, s.result_id, s.params)
    if total is not None:
        if s.total is not None and s.total != total:
            raise bad_request(f"The total size {total} differs from the declared "
                              f"{s.total}.")
        if total < s.received:
            raise bad_request("The total size is less than the bytes already received.")
        s.total = total
    if start is None and end is None and headers.get("Content-Range"):
        # status query: bytes */TOTAL
        if s.total is not None and s.received >= s.total:
            return _complete(st, s)
        return _incomplete(s)
    if start is None:  # no Content-Range: the body is the rest of the upload
        start, total = s.received, s.received + len(body)
        end = total - 1
        s.total = total
    assert end is not None
    if len(body) != end - start + 1:
        raise bad_request(f"The Content-Range {start}-{end} does not match the "
                          f"{len(body)} bytes received.")
    if start > s.received:
        raise bad_request(f"Invalid request: the chunk starts at byte {start} but the "
                          f"session has only {s.received} bytes.")
    final = s.total is not None and end + 1 >= s.total
    if not final and len(body) % CHUNK_GRANULARITY:
        raise bad_request(
            "Invalid request. The number of bytes uploaded is required to be a multiple "
            f"of {CHUNK_GRANULARITY}, except for the final request. The received request "
            f"contained {len(body)} bytes, which does not meet this requirement.")
    s.data += body[s.received - start:]  # overlapping bytes were already received
    if s.total is not None and s.received > s.total:
        del s.data[s.total:]
        raise bad_request("More bytes were sent than the declared total size.")
    if s.total is not None and s.received == s.total:
        return _complete(st, s)
    return _incomplete(s)

def _incomplete(s: UploadSession) -> Reply:
    headers = {"X-GUploader-UploadID": s.id}
    if s.received:
        headers["Range"] = f"bytes=0-{s.received - 1}"
    return Reply(308, b"", headers)

def _complete(st: DriveState, s: UploadSession) -> Reply:
    rec = st.finish_session(s)
    return file_reply(st, rec.id, s.params)
