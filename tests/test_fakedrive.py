"""The fake Drive v3 server (orchestrator/sandbox/drive), driven only through the real
google-api-python-client built by ``orchestrator.hubs.drive.api.build_service``
(and, for the upload protocol's raw steps, that client's own HTTP object)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httplib2
import pytest
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaIoBaseDownload, MediaIoBaseUpload, build_http
from oauth2client.client import (
    AccessTokenCredentials,
    AccessTokenCredentialsError,
    OAuth2Credentials,
)

from orchestrator.hubs.drive.api import build_service
from orchestrator.sandbox.drive import FOLDER_MIME, ROOT_ID, FakeDrive

from .conftest import REPO, wait_for

CHUNK = 256 * 1024


@pytest.fixture
def fake() -> Iterator[FakeDrive]:
    f = FakeDrive(user_email="tester@example.com")
    yield f
    f.stop()


@pytest.fixture
def http(fake: FakeDrive) -> Any:
    """The authorized HTTP object the service uses (oauth2client credentials)."""
    return fake.credentials().authorize(build_http())


@pytest.fixture
def svc(fake: FakeDrive, http: Any) -> Any:
    return build_service(http=http, url=fake.url)


def folder(svc: Any, name: str, parent: str = "root") -> str:
    body = {"name": name, "mimeType": FOLDER_MIME, "parents": [parent]}
    return str(svc.files().create(body=body, fields="id").execute()["id"])


def upload(svc: Any, name: str, data: bytes, parent: str = "root", **meta: Any) -> dict:
    media = MediaIoBaseUpload(io.BytesIO(data), "application/octet-stream")
    body = {"name": name, "parents": [parent], **meta}
    return dict(svc.files().create(body=body, media_body=media, fields="*").execute())


def names(svc: Any, q: str, **kw: Any) -> list[str]:
    resp = svc.files().list(q=q, fields="files(name)", **kw).execute()
    return [f["name"] for f in resp["files"]]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def session_status(http: Any, uri: str, total: int) -> tuple[int, str | None]:
    """Ask a resumable session how much it holds (``Content-Range: bytes */TOTAL``)."""
    resp, _ = http.request(uri, "PUT", headers={"Content-Range": f"bytes */{total}",
                                                "Content-Length": "0"})
    return resp.status, resp.get("range")


def put_rest(http: Any, uri: str, data: bytes, offset: int, chunk: int = CHUNK) -> dict:
    """Send ``data[offset:]`` to a session in ``chunk``-sized PUTs; the final JSON."""
    while True:
        end = min(offset + chunk, len(data)) - 1
        resp, content = http.request(uri, "PUT", body=data[offset:end + 1], headers={
            "Content-Range": f"bytes {offset}-{end}/{len(data)}",
            "Content-Length": str(end - offset + 1)})
        if resp.status in (200, 201):
            return dict(json.loads(content))
        assert resp.status == 308, (resp.status, content)
        assert "location" not in resp
        offset = int(resp["range"].split("-")[1]) + 1


# ----------------------------------------------------------------- files


def test_folders_nested_files_root_alias_and_default_fields(svc: Any) -> None:
    hub = folder(svc, "hub")
    jobs = folder(svc, "jobs", hub)
    f = upload(svc, "manifest.json", b"{}", jobs)
    assert f["parents"] == [jobs] and f["kind"] == "drive#file" and f["ownedByMe"] is True
    assert svc.files().get(fileId=jobs, fields="parents").execute() == {"parents": [hub]}
    assert svc.files().get(fileId="root", fields="id").execute() == {"id": ROOT_ID}
    # without fields Drive answers kind, id, name, mimeType only
    assert svc.files().get(fileId=hub).execute() == {
        "kind": "drive#file", "id": hub, "name": "hub", "mimeType": FOLDER_MIME}
    got = svc.files().get(fileId=hub, fields="*").execute()
    assert "md5Checksum" not in got and "size" not in got and got["version"] == "1"
    assert got["createdTime"].endswith("Z") and len(got["createdTime"]) == 24  # ms precision
    assert names(svc, f"'{hub}' in parents") == ["jobs"]
    assert names(svc, "'root' in parents") == ["hub"]
    # a file id in parents that is not a folder is refused; unknown parents are 404
    with pytest.raises(HttpError) as e:
        upload(svc, "x", b"", "no-such-folder")
    assert e.value.resp.status == 404


def test_multipart_upload_checksums_and_app_properties(fake: FakeDrive, svc: Any) -> None:
    data = os.urandom(5000) + b"\r\n--===============1==\n--\r\n" + bytes(range(256))
    sha = hashlib.sha256(data).hexdigest()
    f = upload(svc, "blob.bin", data, appProperties={"sha256": sha})
    assert f["md5Checksum"] == md5(data) and f["size"] == str(len(data))
    assert f["sha256Checksum"] == sha and f["appProperties"] == {"sha256": sha}
    assert f["mimeType"] == "application/octet-stream" and f["version"] == "1"
    assert fake.content(f["id"]) == data
    assert fake.requests("POST", "/upload/drive/v3/files?uploadType=multipart") == 1
    # simple (uploadType=media) upload: no metadata, named Untitled
    media = MediaIoBaseUpload(io.BytesIO(b"abc"), "text/plain")
    g = svc.files().create(media_body=media, fields="name,mimeType,md5Checksum").execute()
    assert g == {"name": "Untitled", "mimeType": "text/plain", "md5Checksum": md5(b"abc")}
    # appProperties are limited to 124 bytes per key + value, as on Drive
    with pytest.raises(HttpError) as e:
        upload(svc, "big-prop", b"", appProperties={"k": "v" * 124})
    assert e.value.resp.status == 400


def test_resumable_upload_in_256k_chunks(fake: FakeDrive, svc: Any, http: Any) -> None:
    data = os.urandom(6 * CHUNK + 12345)  # ~1.5 MiB
    media = MediaIoBaseUpload(io.BytesIO(data), "application/x-tar", chunksize=CHUNK,
                              resumable=True)
    req = svc.files().create(body={"name": "result.tar"}, media_body=media,
                             fields="id,md5Checksum,size,mimeType")
    progress, resp = [], None
    while resp is None:
        status, resp = req.next_chunk()
        if status:
            progress.append(status.resumable_progress)
    assert progress == [CHUNK * i for i in range(1, 7)]
    assert resp["md5Checksum"] == md5(data) and resp["size"] == str(len(data))
    assert resp["mimeType"] == "application/x-tar"
    assert fake.requests("PUT", "/upload/drive/v3/files?upload_id") == 7
    # a completed session answers a status query with the file
    status_code, _ = session_status(http, req.resumable_uri, len(data))
    assert status_code == 200
    # a non-final chunk must be a multiple of 256 KiB
    req2 = svc.files().create(body={"name": "x"}, media_body=MediaIoBaseUpload(
        io.BytesIO(data), "application/octet-stream", chunksize=CHUNK, resumable=True))
    req2.next_chunk()  # starts the session, sends the first chunk
    resp2, content = http.request(req2.resumable_uri, "PUT", body=b"x" * 1000, headers={
        "Content-Range": f"bytes {CHUNK}-{CHUNK + 999}/{len(data)}", "Content-Length": "1000"})
    assert resp2.status == 400 and b"262144" in content
    assert session_status(http, req2.resumable_uri, len(data)) == (308, f"bytes=0-{CHUNK - 1}")
    # total unknown (bytes a-b/*) until the last chunk
    s, _ = http.request(req2.resumable_uri, "PUT", body=data[CHUNK:2 * CHUNK], headers={
        "Content-Range": f"bytes {CHUNK}-{2 * CHUNK - 1}/*"})
    assert s.status == 308 and s["range"] == f"bytes=0-{2 * CHUNK - 1}"
    assert put_rest(http, req2.resumable_uri, data, 2 * CHUNK)["id"]
    assert fake.find("x")[0]["md5Checksum"] == md5(data)
    # an empty file: one PUT without Content-Range
    empty = MediaIoBaseUpload(io.BytesIO(b""), "text/plain", chunksize=CHUNK, resumable=True)
    got = svc.files().create(body={"name": "empty"}, media_body=empty,
                             fields="size,md5Checksum").execute()
    assert got == {"size": "0", "md5Checksum": md5(b"")}


@pytest.mark.parametrize("keep_partial", [False, True])
def test_dropped_chunk_recovered_from_session_status(fake: FakeDrive, svc: Any, http: Any,
                                                     keep_partial: bool) -> None:
    fake.faults.configure(drop_keeps_partial=keep_partial)
    data = os.urandom(6 * CHUNK + 999)
    media = MediaIoBaseUpload(io.BytesIO(data), "application/octet-stream",
                              chunksize=CHUNK, resumable=True)
    req = svc.files().create(body={"name": "ckpt.bin"}, media_body=media,
                             fields="id,md5Checksum,size")
    req.next_chunk()
    req.next_chunk()
    fake.faults.fail_next(1, "drop", match=r"^PUT /upload/.*upload_id=")
    with pytest.raises(ConnectionError):
        req.next_chunk()  # the third chunk: the server reads half of it, then resets
    status, rng = session_status(http, req.resumable_uri, len(data))
    expected = 2 * CHUNK + (CHUNK // 2 if keep_partial else 0)
    assert (status, rng) == (308, f"bytes=0-{expected - 1}")
    result = put_rest(http, req.resumable_uri, data, expected)
    assert result["md5Checksum"] == md5(data) and result["size"] == str(len(data))
    assert fake.stats["faults_injected"] == {"drop": 1}


def test_client_resumes_by_itself_after_a_5xx_chunk(fake: FakeDrive, svc: Any) -> None:
    data = os.urandom(3 * CHUNK + 1)
    media = MediaIoBaseUpload(io.BytesIO(data), "application/octet-stream",
                              chunksize=CHUNK, resumable=True)
    req = svc.files().create(body={"name": "f"}, media_body=media, fields="md5Checksum")
    req.next_chunk()
    fake.faults.fail_next(1, "503", match="^PUT ")
    with pytest.raises(HttpError) as e:
        req.next_chunk()
    assert e.value.resp.status == 503
    resp = None
    while resp is None:  # next_chunk() asks the session (bytes */N), then goes on
        _, resp = req.next_chunk()
    assert resp["md5Checksum"] == md5(data)


def test_get_metadata_media_and_ranges(svc: Any, http: Any, fake: FakeDrive) -> None:
    data = bytes(range(256)) * 40
    f = upload(svc, "data.bin", data)
    meta = svc.files().get(fileId=f["id"], fields="id,name,size,md5Checksum").execute()
    assert meta == {"id": f["id"], "name": "data.bin", "size": str(len(data)),
                    "md5Checksum": md5(data)}
    assert svc.files().get_media(fileId=f["id"]).execute() == data
    req = svc.files().get_media(fileId=f["id"])
    req.headers["range"] = "bytes=10-19"
    assert req.execute() == data[10:20]
    resp, content = http.request(f"{fake.url}drive/v3/files/{f['id']}?alt=media",
                                 headers={"Range": "bytes=-5"})
    assert resp.status == 206 and content == data[-5:]
    assert resp["content-range"] == f"bytes {len(data) - 5}-{len(data) - 1}/{len(data)}"
    resp, _ = http.request(f"{fake.url}drive/v3/files/{f['id']}?alt=media",
                           headers={"Range": f"bytes={len(data)}-"})
    assert resp.status == 416
    buf = io.BytesIO()
    down = MediaIoBaseDownload(buf, svc.files().get_media(fileId=f["id"]), chunksize=3000)
    done = False
    while not done:
        _, done = down.next_chunk()
    assert buf.getvalue() == data
    with pytest.raises(HttpError) as e:
        svc.files().get(fileId="1nope").execute()
    assert e.value.resp.status == 404
    assert e.value.error_details[0]["reason"] == "notFound"
    assert json.loads(e.value.content)["error"]["message"] == "File not found: 1nope."
    with pytest.raises(HttpError) as e:  # folders have no content
        svc.files().get_media(fileId=folder(svc, "d")).execute()
    assert e.value.resp.status == 403


# ----------------------------------------------------------------- listing


def test_list_queries(svc: Any) -> None:
    hub = folder(svc, "hub")
    other = folder(svc, "other")
    upload(svc, "heartbeat.json", b"1", hub, mimeType="application/json")
    upload(svc, "status.json", b"2", hub, mimeType="application/json")
    upload(svc, "it's here.txt", b"3", hub, appProperties={"sha256": "abc"})
    cutoff = svc.files().get(fileId=hub, fields="modifiedTime").execute()["modifiedTime"]
    upload(svc, "log.txt", b"4", other)
    in_hub = f"'{hub}' in parents"
    assert names(svc, f"{in_hub} and name = 'status.json'") == ["status.json"]
    assert names(svc, "name = 'it\\'s here.txt'") == ["it's here.txt"]
    assert names(svc, f"{in_hub} and mimeType = 'application/json'") == [
        "heartbeat.json", "status.json"]
    assert names(svc, f"{in_hub} and mimeType != 'application/json'") == ["it's here.txt"]
    # Drive's contains on names matches word prefixes, case-insensitively
    assert names(svc, "name contains 'HEART'") == ["heartbeat.json"]
    assert names(svc, "name contains 'beat'") == []
    assert names(svc, "name contains 'json'") == ["heartbeat.json", "status.json"]
    assert names(svc, f"{in_hub} and not name contains 'status'") == [
        "heartbeat.json", "it's here.txt"]
    assert names(svc, f"name = 'log.txt' or ({in_hub} and name contains 'it')") == [
        "it's here.txt", "log.txt"]
    assert names(svc, f"not ({in_hub} or '{other}' in parents)") == ["hub", "other"]
    assert names(svc, f"modifiedTime > '{cutoff}' and mimeType != '{FOLDER_MIME}'") == [
        "heartbeat.json", "status.json", "it's here.txt", "log.txt"]
    assert names(svc, "appProperties has { key='sha256' and value='abc' }") == [
        "it's here.txt"]
    resp = svc.files().list(q=in_hub, spaces="drive", corpora="user", supportsAllDrives=True,
                            includeItemsFromAllDrives=True,
                            fields="files(id, name, parents, md5Checksum, modifiedTime, "
                                   "version, size, appProperties)").execute()
    assert {f["name"] for f in resp["files"]} == {"heartbeat.json", "status.json",
                                                  "it's here.txt"}
    assert set(resp) == {"files"}  # only what fields asked for
    # a query too long for a URL travels as POST + X-HTTP-Method-Override: GET
    long_q = " or ".join(f"name = 'file-{i:04d}'" for i in range(150)) + " or name = 'log.txt'"
    assert names(svc, long_q) == ["log.txt"]
    for bad in ("name = 'x", "name ~ 'x'", "size > 3", "name = 'a' and"):
        with pytest.raises(HttpError) as e:
            svc.files().list(q=bad).execute()
        assert e.value.resp.status == 400


def test_trashed_filtering_and_cascade(fake: FakeDrive, svc: Any) -> None:
    d = folder(svc, "d")
    keep = upload(svc, "keep", b"k", d)["id"]
    gone = upload(svc, "gone", b"g", d)["id"]
    t = svc.files().update(fileId=gone, body={"trashed": True}, fields="trashed,version")
    assert t.execute() == {"trashed": True, "version": "2"}
    in_d = f"'{d}' in parents"
    assert names(svc, in_d) == ["keep", "gone"]  # Drive lists trashed files unless told
    assert names(svc, f"{in_d} and trashed = false") == ["keep"]
    assert names(svc, f"{in_d} and trashed = true") == ["gone"]
    assert svc.files().get(fileId=gone, fields="trashed").execute() == {"trashed": True}
    svc.files().update(fileId=d, body={"trashed": True}).execute()
    kept = svc.files().get(fileId=keep, fields="trashed,explicitlyTrashed").execute()
    assert kept == {"trashed": True, "explicitlyTrashed": False}
    svc.files().update(fileId=d, body={"trashed": False}).execute()
    assert names(svc, "trashed = true") == ["gone"]  # explicitly trashed stays in the trash
    with FakeDrive(list_trashed_by_default=False) as strict:
        s = build_service(credentials=strict.credentials(), url=strict.url)
        upload(s, "a", b"")
        b = upload(s, "b", b"")["id"]
        s.files().update(fileId=b, body={"trashed": True}).execute()
        assert names(s, "name contains ''") == ["a"] and names(s, "trashed = true") == ["b"]


def test_paging_ordering_and_duplicates(svc: Any) -> None:
    d = folder(svc, "d")
    ids = [upload(svc, n, n.encode(), d)["id"] for n in ["c", "a", "b", "a", "e"]]
    svc.files().update(fileId=ids[2], body={"description": "touched"}).execute()  # b newest
    q = f"'{d}' in parents"
    assert names(svc, q) == ["c", "a", "b", "a", "e"]  # duplicates allowed, creation order
    assert names(svc, q, orderBy="modifiedTime desc") == ["b", "e", "a", "a", "c"]
    assert names(svc, q, orderBy="name") == ["a", "a", "b", "c", "e"]
    assert names(svc, q, orderBy="name desc,createdTime") == ["e", "c", "b", "a", "a"]
    assert names(svc, q, orderBy="createdTime desc") == ["e", "a", "b", "a", "c"]
    seen, token, pages = [], None, 0
    while True:
        resp = svc.files().list(q=q, pageSize=2, pageToken=token, orderBy="name",
                                fields="nextPageToken, files(id, name)").execute()
        pages += 1
        assert len(resp["files"]) <= 2
        seen += [f["id"] for f in resp["files"]]
        token = resp.get("nextPageToken")
        if not token:
            break
    assert pages == 3 and sorted(seen) == sorted(ids)
    # nextPageToken is only returned when fields asks for it, as on Drive
    assert "nextPageToken" not in svc.files().list(q=q, pageSize=2, fields="files(id)").execute()
    with pytest.raises(HttpError):
        svc.files().list(q=q, orderBy="size").execute()


# ----------------------------------------------------------------- writes


def test_update_content_metadata_and_parents(fake: FakeDrive, svc: Any) -> None:
    a, b = folder(svc, "a"), folder(svc, "b")
    f = upload(svc, "status.json", b"v1", a, appProperties={"sha256": "1", "attempt": "1"})
    media = MediaIoBaseUpload(io.BytesIO(b"version two"), "application/json")
    g = svc.files().update(fileId=f["id"], media_body=media,
                           fields="version,md5Checksum,modifiedTime,size").execute()
    assert int(g["version"]) > int(f["version"]) and g["md5Checksum"] == md5(b"version two")
    assert g["modifiedTime"] > f["modifiedTime"] and g["size"] == "11"
    h = svc.files().update(fileId=f["id"], body={"name": "s2.json",
                                                 "appProperties": {"sha256": "2", "attempt": None}},
                           addParents=b, removeParents=a,
                           fields="name,parents,appProperties,version,modifiedTime").execute()
    assert h["name"] == "s2.json" and h["parents"] == [b]
    assert h["appProperties"] == {"sha256": "2"} and int(h["version"]) > int(g["version"])
    assert h["modifiedTime"] > g["modifiedTime"]
    # resumable content update (PATCH /upload/...?uploadType=resumable)
    data = os.urandom(2 * CHUNK + 5)
    req = svc.files().update(fileId=f["id"], media_body=MediaIoBaseUpload(
        io.BytesIO(data), "application/octet-stream", chunksize=CHUNK, resumable=True),
        body={"description": "resumed"}, fields="md5Checksum,description")
    resp = None
    while resp is None:
        _, resp = req.next_chunk()
    assert resp == {"md5Checksum": md5(data), "description": "resumed"}
    assert fake.content(f["id"]) == data
    with pytest.raises(HttpError) as e:  # one parent per file
        svc.files().update(fileId=f["id"], addParents=a).execute()
    assert e.value.resp.status == 403 and e.value.error_details[0]["reason"] == "cannotAddParent"
    with pytest.raises(HttpError) as e:  # parents are not writable in an update body
        svc.files().update(fileId=f["id"], body={"parents": [a]}).execute()
    assert e.value.error_details[0]["reason"] == "fieldNotWritable"


def test_delete_folder_cascades(fake: FakeDrive, svc: Any) -> None:
    top = folder(svc, "top")
    sub = folder(svc, "sub", top)
    leaf = upload(svc, "leaf", b"x", sub)["id"]
    other = upload(svc, "other", b"y")["id"]
    assert svc.files().delete(fileId=top).execute() == ""
    for fid in (top, sub, leaf):
        with pytest.raises(HttpError) as e:
            svc.files().get(fileId=fid).execute()
        assert e.value.resp.status == 404
    assert [f["id"] for f in fake.files()] == [other]
    with pytest.raises(HttpError):
        svc.files().delete(fileId=top).execute()


# ----------------------------------------------------------------- changes, about


def test_changes_feed(svc: Any) -> None:
    start = svc.changes().getStartPageToken().execute()
    assert start["kind"] == "drive#startPageToken"
    token = start["startPageToken"]
    empty = svc.changes().list(pageToken=token).execute()
    assert empty["changes"] == [] and empty["newStartPageToken"] == token
    d = folder(svc, "d")
    f = upload(svc, "f", b"1", d)["id"]
    svc.files().update(fileId=f, body={"name": "f2"}).execute()
    svc.files().update(fileId=f, media_body=MediaIoBaseUpload(io.BytesIO(b"2"), "text/plain"))\
        .execute()
    gone = upload(svc, "gone", b"g")["id"]
    svc.files().delete(fileId=gone).execute()
    fields = "nextPageToken,newStartPageToken,changes(fileId,removed,time,file(name,md5Checksum))"
    resp = svc.changes().list(pageToken=token, fields=fields, spaces="drive",
                              supportsAllDrives=True, includeItemsFromAllDrives=True).execute()
    # each file once, at its latest change (Drive coalesces); removals have no file
    assert [(c["fileId"], c["removed"]) for c in resp["changes"]] == [
        (d, False), (f, False), (gone, True)]
    assert resp["changes"][1]["file"] == {"name": "f2", "md5Checksum": md5(b"2")}
    assert "file" not in resp["changes"][2] and "nextPageToken" not in resp
    new_token = resp["newStartPageToken"]
    assert int(new_token) > int(token)
    kept = svc.changes().list(pageToken=token, includeRemoved=False,
                              fields="changes(fileId)").execute()
    assert [c["fileId"] for c in kept["changes"]] == [d, f]
    # paging
    seen, page_token, pages = [], token, 0
    while page_token:
        r = svc.changes().list(pageToken=page_token, pageSize=1,
                               fields="nextPageToken,newStartPageToken,changes(fileId)").execute()
        pages += 1
        seen += [c["fileId"] for c in r["changes"]]
        page_token = r.get("nextPageToken")
        last = r
    assert seen == [d, f, gone] and pages >= 3 and last["newStartPageToken"] == new_token
    # a fresh token sees only what happens after it
    assert svc.changes().list(pageToken=new_token).execute()["changes"] == []
    svc.files().update(fileId=d, body={"trashed": True}).execute()
    later = svc.changes().list(pageToken=new_token,
                               fields="changes(fileId,removed,file(trashed))").execute()
    assert {c["fileId"] for c in later["changes"]} == {d, f}  # the child is trashed too
    assert all(c["file"]["trashed"] and not c["removed"] for c in later["changes"])


def test_about(fake: FakeDrive, svc: Any) -> None:
    upload(svc, "x", b"12345")
    about = svc.about().get(fields="kind,user,storageQuota").execute()
    assert about["kind"] == "drive#about"
    assert about["user"]["emailAddress"] == "tester@example.com"
    assert about["user"]["permissionId"] and about["user"]["displayName"]
    assert about["storageQuota"]["usage"] == "5"
    assert svc.about().get(fields="user(emailAddress)").execute() == {
        "user": {"emailAddress": "tester@example.com"}}
    with pytest.raises(HttpError) as e:  # Drive requires fields on about.get
        svc.about().get().execute()
    assert e.value.resp.status == 400
    with pytest.raises(HttpError) as e:  # unknown field names are refused, as on Drive
        svc.files().list(fields="files(id,nmae)").execute()
    assert e.value.error_details[0]["reason"] == "invalidParameter"


# ----------------------------------------------------------------- auth


def test_expired_token_is_refreshed_on_401(fake: FakeDrive) -> None:
    expired = fake.issue_token()
    fake.expire_tokens()
    creds = OAuth2Credentials(expired, "client-id", "client-secret", "1//refresh", None,
                              fake.url + "token", "orch-tests")
    svc = build_service(credentials=creds, url=fake.url)
    assert svc.files().list(fields="files(id)").execute() == {"files": []}
    assert creds.access_token != expired
    assert fake.requests("POST", "/token") == 1
    assert fake.requests("GET", "/drive/v3/files") == 2  # the 401, then the retry


def test_auth_required_and_token_grants(fake: FakeDrive) -> None:
    anon = build_service(http=build_http(), url=fake.url)
    with pytest.raises(HttpError) as e:
        anon.files().list().execute()
    assert e.value.resp.status == 401 and e.value.error_details[0]["reason"] == "authError"
    stale = build_service(credentials=AccessTokenCredentials("ya29.made-up", "t"), url=fake.url)
    with pytest.raises(AccessTokenCredentialsError):  # a 401, and it cannot refresh
        stale.files().list().execute()
    # a service-account style JWT grant: any assertion, the email comes from it
    claims = base64.urlsafe_b64encode(json.dumps({"iss": "sa@proj.iam.gserviceaccount.com"})
                                      .encode()).decode().rstrip("=")
    resp, content = httplib2.Http().request(
        fake.url + "token", "POST", headers={"Content-Type": "application/x-www-form-urlencoded"},
        body="grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
             f"&assertion=eyJhbGciOiJSUzI1NiJ9.{claims}.c2ln")
    grant = json.loads(content)
    assert resp.status == 200 and grant["token_type"] == "Bearer" and grant["expires_in"] == 3600
    sa = build_service(credentials=AccessTokenCredentials(grant["access_token"], "t"),
                       url=fake.url)
    assert sa.about().get(fields="user(emailAddress)").execute()["user"]["emailAddress"] == \
        "sa@proj.iam.gserviceaccount.com"
    resp, content = httplib2.Http().request(
        fake.url + "token", "POST", body="grant_type=authorization_code&code=abc",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert "refresh_token" in json.loads(content)
    # short-lived tokens expire by themselves
    fake.token_ttl = 2.0  # the first call below must come within it, under load too
    short = build_service(credentials=AccessTokenCredentials(fake.issue_token(), "t"),
                          url=fake.url)
    short.files().list().execute()

    def rejected() -> bool:
        try:
            short.files().list().execute()
        except AccessTokenCredentialsError:
            return True
        return False

    wait_for(rejected, timeout=15, interval=0.1, message="token expiry")
    fake.require_auth = False
    assert anon.files().list().execute()["files"] == []


def test_google_auth_service_account_and_user_credentials(fake: FakeDrive) -> None:
    """google-auth credentials work too: a real signed JWT grant, and refresh on 401."""
    pytest.importorskip("cryptography")
    import google.oauth2.credentials
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.oauth2 import service_account

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    sa = service_account.Credentials.from_service_account_info(
        {"type": "service_account", "client_email": "bot@p.iam.gserviceaccount.com",
         "private_key": key, "private_key_id": "k1", "token_uri": fake.token_uri,
         "project_id": "p"}, scopes=["https://www.googleapis.com/auth/drive"])
    svc = build_service(credentials=sa, url=fake.url)
    assert svc.about().get(fields="user(emailAddress)").execute() == {
        "user": {"emailAddress": "bot@p.iam.gserviceaccount.com"}}
    user = google.oauth2.credentials.Credentials(
        token="ya29.stale", refresh_token="1//r", token_uri=fake.token_uri,
        client_id="id", client_secret="secret")
    assert build_service(credentials=user, url=fake.url).files().list().execute()["files"] == []
    assert user.token != "ya29.stale" and fake.requests("POST", "/token") == 2


# ----------------------------------------------------------------- faults, lag, stats


@pytest.mark.parametrize("kind,status,reason", [
    ("rateLimitExceeded", 403, "rateLimitExceeded"),
    ("userRateLimitExceeded", 403, "userRateLimitExceeded"),
    ("429", 429, "rateLimitExceeded"),
    ("500", 500, "backendError"),
    ("503", 503, "backendError"),
    ("drop", None, None),
])
def test_fault_kinds_surface_in_the_client(fake: FakeDrive, svc: Any, kind: str,
                                           status: int | None, reason: str | None) -> None:
    fake.faults.fail_next(1, kind)
    if status is None:
        with pytest.raises(ConnectionError):
            svc.files().list().execute()
    else:
        with pytest.raises(HttpError) as e:
            svc.files().list().execute()
        assert e.value.resp.status == status
        assert e.value.error_details[0]["reason"] == reason
        if status == 403 or status == 429:
            assert e.value.error_details[0]["domain"] == "usageLimits"
    assert svc.files().list().execute()["files"] == []  # only one request failed
    assert fake.stats["faults_injected"] == {kind: 1}


def test_random_faults_are_deterministic_per_seed(fake: FakeDrive, svc: Any) -> None:
    def run() -> list[int]:
        fake.faults.configure(rate=0.5, kinds=["500", "503", "429"], seed=42)
        out = []
        for _ in range(16):
            try:
                svc.files().list(fields="files(id)").execute()
                out.append(200)
            except HttpError as e:
                out.append(e.resp.status)
        fake.faults.configure(rate=0)
        return out

    first = run()
    assert run() == first
    assert 200 in first and set(first) - {200}
    # the token endpoint is never faulted
    fake.faults.configure(rate=1.0, kinds=["500"])
    creds = fake.credentials(access_token="ya29.unknown")
    creds.refresh(build_http())
    assert creds.access_token != "ya29.unknown"


def test_lag_hides_new_files_from_listings_not_from_get(fake: FakeDrive, svc: Any) -> None:
    token = svc.changes().getStartPageToken().execute()["startPageToken"]
    fake.faults.lag = 3.0  # the three reads after each write must come within it
    f = upload(svc, "late.json", b"x")
    assert svc.files().get(fileId=f["id"], fields="name").execute() == {"name": "late.json"}
    assert names(svc, "name = 'late.json'") == []
    assert svc.changes().list(pageToken=token).execute()["changes"] == []
    wait_for(lambda: names(svc, "name = 'late.json'") == ["late.json"], timeout=15,
             interval=0.1, message="file listed after the lag")
    ch = svc.changes().list(pageToken=token, fields="changes(fileId)").execute()
    assert ch["changes"] == [{"fileId": f["id"]}]
    # deletions show late in listings too, but get sees them at once
    svc.files().delete(fileId=f["id"]).execute()
    with pytest.raises(HttpError):
        svc.files().get(fileId=f["id"]).execute()
    assert names(svc, "name = 'late.json'") == ["late.json"]
    wait_for(lambda: names(svc, "name = 'late.json'") == [], timeout=15, interval=0.1,
             message="deletion listed after the lag")


def test_stats_count_requests_and_bytes(fake: FakeDrive, svc: Any, http: Any) -> None:
    fake.reset_stats()
    upload(svc, "a", b"12345")
    svc.files().list().execute()
    svc.files().list().execute()
    s = fake.stats
    assert s["requests"] == {"POST /upload/drive/v3/files?uploadType=multipart": 1,
                             "GET /drive/v3/files": 2}
    assert s["total_requests"] == 3 and s["bytes_received"] > 5 and s["bytes_sent"] > 0
    _, content = http.request(fake.url + "_fake/stats")
    assert json.loads(content)["requests"] == s["requests"]
    fake.reset_stats()
    assert fake.stats["total_requests"] == 0


def test_concurrent_clients(fake: FakeDrive) -> None:
    def worker(n: int) -> list[str]:
        s = build_service(credentials=fake.credentials(), url=fake.url)
        d = folder(s, f"w{n}")
        ids = [upload(s, f"hb{i}", f"{n}:{i}".encode(), d)["id"] for i in range(5)]
        assert names(s, f"'{d}' in parents and trashed = false") == [f"hb{i}" for i in range(5)]
        return ids

    with ThreadPoolExecutor(8) as pool:
        all_ids = [i for ids in pool.map(worker, range(8)) for i in ids]
    assert len(set(all_ids)) == 40 and len(fake.files()) == 48
    svc = build_service(credentials=fake.credentials(), url=fake.url)
    resp = svc.changes().list(pageToken="1", pageSize=1000, fields="changes(fileId)").execute()
    assert len(resp["changes"]) == 48


# ----------------------------------------------------------------- standalone


def test_standalone_server_subprocess() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.sandbox.drive", "--port", "0"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        plain = httplib2.Http(timeout=10)
        _, content = plain.request(url + "_fake/tokens", "POST", body="{}")
        token = json.loads(content)["access_token"]
        svc = build_service(credentials=AccessTokenCredentials(token, "t"), url=url)
        assert upload(svc, "remote", b"r")["md5Checksum"] == md5(b"r")
        assert names(svc, "name = 'remote'") == ["remote"]
        body = json.dumps({"fail_next": [{"n": 1, "kind": "503"}]})
        resp, _ = plain.request(url + "_fake/faults", "POST", body=body)
        assert resp.status == 200
        with pytest.raises(HttpError) as e:
            svc.files().list().execute()
        assert e.value.resp.status == 503
        _, content = plain.request(url + "_fake/stats")
        assert json.loads(content)["requests"]["GET /drive/v3/files"] == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_in_process_server_stops(fake: FakeDrive, svc: Any) -> None:
    svc.files().list().execute()  # leaves a kept-alive connection open
    fake.stop()
    with pytest.raises(ConnectionError):
        svc.files().list().execute()
