"""The hub CONTRACT: what every Hub implementation must do, whatever its transport.

Written only against the abstract interface of ``orchestrator/hubs/base.py``
(``put_bytes``, ``put_file``, ``get_bytes``, ``get_file``, ``exists``, ``list``,
``delete``, ``put_json``, ``get_json``, ``watch``, ``local_path``), so that the same
tests run unchanged against every kind of hub.

Adding a kind of hub (e.g. ``"drive"``):

1. add its name to ``HUB_KINDS``;
2. add one branch to ``make_hub`` that builds a client of that kind whose storage
   belongs to the test: derive the storage's name from ``tmp_path`` (unique per
   test), so that calling ``make_hub`` again with the same ``tmp_path`` gives a
   SECOND, independent client of the SAME storage (the ``peer`` fixture: "another
   party"). Call ``pytest.skip(reason)`` there when the kind can't be set up
   (library missing, no server, no credentials).

What the contract assumes about time: a writer's own writes are visible to its own
reads at once; what another party (``peer``) sees may lag, so every cross-party
check polls with a generous deadline (``eventually``). No test sleeps for a fixed
time to let something happen.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import protocol as P
from orchestrator.errors import HubError, HubNotFound, OrchError
from orchestrator.hubs.base import Hub
from orchestrator.hubs.folder import FolderHub

from .conftest import wait_for

pytestmark = pytest.mark.timeout(300)

#: Every kind of hub the contract runs against. One line per kind.
HUB_KINDS = ["folder", "drive", "sftp"]

#: How long another party may take to see a change (and a watcher to wake).
VISIBILITY_DEADLINE = 20.0


def make_hub(kind: str, tmp_path: Path) -> Hub:
    """A client of a hub of ``kind`` whose storage is private to this test.

    Calling it twice with the same ``tmp_path`` must return two independent clients
    of the same storage (the second one plays "another party")."""
    if kind == "folder":
        return FolderHub(tmp_path / "hub")
    if kind == "drive":  # the real Drive client against the local Drive v3 server
        from .conftest import drive_hub

        return drive_hub(f"contract/{tmp_path.parent.name}-{tmp_path.name}")
    if kind == "sftp":  # the real SFTP hub, over its own SSH connection, on a real sshd
        return sftp_hub(tmp_path / "sftp-hub")
    pytest.skip(f"no factory for hub kind {kind!r}")


# ------------------------------------------------------------------ sftp kind
#
# One real sshd (tests/sshd.py) serves every sftp contract test of the session:
# started on first use in a folder of its own, stopped when the session ends. Each
# make_hub call opens a NEW connection (HostLink) to it, so hub and peer are two
# independent clients of the same folder; every link a test opened is closed after it.

_SFTP_SERVER: Any = None
_SFTP_LINKS: list[Any] = []


def _sftp_server() -> Any:
    """The session's sshd (started now if needed); skipped without OpenSSH, except
    under CI, where it fails (as the ``sshd`` fixture does)."""
    global _SFTP_SERVER
    from tests.conftest import under_ci
    from tests.sshd import Sshd, ssh_available

    if not ssh_available():
        reason = "needs OpenSSH's /usr/sbin/sshd and ssh-keygen (scripts/setup.sh as root)"
        if under_ci():
            pytest.fail(f"{reason}: missing under CI")
        pytest.skip(reason)
    if _SFTP_SERVER is None:
        import atexit
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="orch-contract-sshd-"))
        server = Sshd(folder / "sshd")
        (folder / "known_hosts").write_text(server.known_hosts_line + "\n")

        def stop() -> None:
            server.stop()
            shutil.rmtree(folder, ignore_errors=True)

        atexit.register(stop)  # also stopped by _sftp_session below; stop is idempotent
        _SFTP_SERVER = server
    return _SFTP_SERVER


def sftp_hub(root: Path) -> Hub:
    """An SftpHub of folder ``root`` over a new connection to the session's sshd."""
    import sys

    from orchestrator.hosts import Host
    from orchestrator.hubs.sftp import SftpHub
    from orchestrator.ssh import HostLink

    server = _sftp_server()
    host = Host(name="contract", user=server.user, address=server.host, port=server.port,
                key=str(server.user_key), python=sys.executable, workdir=str(root.parent))
    link = HostLink(host, server.folder.parent / "known_hosts")
    _SFTP_LINKS.append(link)
    return SftpHub(link, str(root))


@pytest.fixture(autouse=True, scope="session")
def _sftp_session() -> Iterator[None]:
    """Stops the session's sshd (if a test started it) when the session ends."""
    yield
    if _SFTP_SERVER is not None:
        _SFTP_SERVER.stop()


@pytest.fixture(autouse=True)
def _close_sftp_links() -> Iterator[None]:
    """Closes the SSH connections a test opened (after its hub fixture's wipe)."""
    yield
    while _SFTP_LINKS:
        _SFTP_LINKS.pop().close()


@pytest.fixture(params=HUB_KINDS)
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hub]:
    """A fresh, empty hub of each kind."""
    h = make_hub(request.param, tmp_path)
    yield h
    # Best-effort wipe through the interface (matters for remote kinds only).
    with contextlib.suppress(OrchError):
        for name in h.list(""):
            h.delete(name)


@pytest.fixture
def peer(hub: Hub, request: pytest.FixtureRequest, tmp_path: Path) -> Hub:
    """Another party on the same storage as ``hub`` (its own client)."""
    return make_hub(request.node.callspec.params["hub"], tmp_path)


# --------------------------------------------------------------------- helpers


def eventually(predicate: Callable[[], Any], message: str,
               timeout: float = VISIBILITY_DEADLINE) -> Any:
    """Poll ``predicate`` until truthy (for changes made by another party)."""
    return wait_for(predicate, timeout=timeout, interval=0.02, message=message)


def try_get(h: Hub, key: str) -> bytes | None:
    try:
        return h.get_bytes(key)
    except HubNotFound:
        return None


def framed(seq: int, body: bytes) -> bytes:
    """A self-checking version: header with sequence number, length and sha256."""
    return b"%010d %010d %s\n" % (seq, len(body), hashlib.sha256(body).hexdigest().encode()) + body


def unframe(data: bytes) -> int:
    """The sequence number of a complete version; AssertionError for a partial one."""
    header, nl, body = data.partition(b"\n")
    assert nl, f"no header in {len(data)} bytes: torn read"
    seq, length, digest = header.split(b" ")
    assert int(length) == len(body), f"torn read: {len(body)} of {int(length)} body bytes"
    assert hashlib.sha256(body).hexdigest().encode() == digest, "torn read: checksum mismatch"
    return int(seq)


PAYLOADS = {
    "empty": b"",
    "small": b"hello hub\n",
    "3MiB_random": random.Random(1).randbytes(3 << 20),
    "binary_NULs": b"\x00" + bytes(range(256)) * 64 + b"\x00\x00\xff\x00",
}

BAD_KEYS = ["", "/abs", "a/../b", "a//b", "./a", "..", "a/", "a/.", "victim/.."]


# --------------------------------------------------------------- bytes & files


@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_put_get_bytes_round_trip(hub: Hub, payload: bytes) -> None:
    hub.put_bytes("data/blob.bin", payload)
    assert hub.get_bytes("data/blob.bin") == payload
    assert hub.exists("data/blob.bin")


def test_peer_sees_writes_and_deletes_eventually(hub: Hub, peer: Hub) -> None:
    data = PAYLOADS["binary_NULs"]
    hub.put_bytes("x/y.bin", data)
    eventually(lambda: try_get(peer, "x/y.bin") == data, "peer reads the written bytes")
    eventually(lambda: peer.list("x") == ["y.bin"], "peer lists the written file once")
    hub.delete("x/y.bin")
    eventually(lambda: not peer.exists("x/y.bin"), "peer sees the delete")
    with pytest.raises(HubNotFound):
        peer.get_bytes("x/y.bin")


@pytest.mark.parametrize("payload", [PAYLOADS["empty"], PAYLOADS["3MiB_random"]],
                         ids=["empty", "3MiB_random"])
def test_put_file_get_file_round_trip(hub: Hub, tmp_path: Path, payload: bytes) -> None:
    src = tmp_path / "src" / "in.bin"
    src.parent.mkdir()
    src.write_bytes(payload)
    hub.put_file("files/in.bin", src)
    assert src.read_bytes() == payload, "put_file changed its source"
    assert hub.get_bytes("files/in.bin") == payload

    dest = tmp_path / "out" / "deep" / "er" / "copy.bin"  # parents don't exist yet
    hub.get_file("files/in.bin", dest)
    assert dest.read_bytes() == payload
    assert os.listdir(dest.parent) == ["copy.bin"], "get_file left temporary files behind"


def test_get_file_overwrites_existing_dest_without_leftovers(hub: Hub, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "f.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"old local content that is longer than the new one" * 100)
    (dest.parent / "neighbour.txt").write_text("keep me")
    hub.put_bytes("f.bin", b"new")
    hub.get_file("f.bin", dest)
    assert dest.read_bytes() == b"new"
    assert (dest.parent / "neighbour.txt").read_text() == "keep me"
    assert sorted(os.listdir(dest.parent)) == ["f.bin", "neighbour.txt"], \
        "get_file left temporary files behind"


def test_get_file_of_missing_key_leaves_dest_alone(hub: Hub, tmp_path: Path) -> None:
    absent = tmp_path / "out1" / "absent.bin"
    with pytest.raises(HubNotFound):
        hub.get_file("no/such/key", absent)
    assert not absent.exists()
    if absent.parent.exists():
        assert os.listdir(absent.parent) == []

    present = tmp_path / "out2" / "present.bin"
    present.parent.mkdir()
    present.write_bytes(b"precious")
    with pytest.raises(HubNotFound):
        hub.get_file("no/such/key", present)
    assert present.read_bytes() == b"precious"
    assert os.listdir(present.parent) == ["present.bin"]


def test_get_file_replaces_dest_atomically(hub: Hub, tmp_path: Path) -> None:
    """A local reader of ``dest`` sees whole versions while get_file rewrites it."""
    rng = random.Random(2)
    versions = [framed(i, rng.randbytes(rng.randrange(1, 1 << 20))) for i in range(12)]
    for i, v in enumerate(versions):
        hub.put_bytes(f"versions/{i}", v)
    dest = tmp_path / "out" / "dest.bin"
    hub.get_file("versions/0", dest)

    stop, errors, reads = threading.Event(), [], [0]

    def read() -> None:
        while not stop.is_set():
            try:
                unframe(dest.read_bytes())
                reads[0] += 1
            except FileNotFoundError:
                errors.append("dest vanished during get_file")
            except AssertionError as exc:
                errors.append(str(exc))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        for _rounds in range(3):
            for i in range(len(versions)):
                hub.get_file(f"versions/{i}", dest)
                assert unframe(dest.read_bytes()) == i
    finally:
        stop.set()
        reader.join(30)
    assert not errors, errors[:3]
    assert reads[0] > 0
    assert os.listdir(dest.parent) == ["dest.bin"], "get_file left temporary files behind"


# ------------------------------------------------------------------- overwrite


def test_overwrite_latest_wins_and_is_listed_once(hub: Hub, peer: Hub, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    contents = [b"first version, quite long " * 1000, b"2", b"", b"fourth" * 50_000, b"5th"]
    for i, data in enumerate(contents):
        if i % 2:
            src.write_bytes(data)
            hub.put_file("own/file.bin", src)
        else:
            hub.put_bytes("own/file.bin", data)
        assert hub.get_bytes("own/file.bin") == data, f"own read after rewrite {i} is stale"
        assert hub.list("own") == ["file.bin"], f"after rewrite {i}"
    hub.put_json("own/state.json", {"n": 1})
    hub.put_json("own/state.json", {"n": 2})
    assert hub.get_json("own/state.json") == {"n": 2}
    assert hub.list("own") == ["file.bin", "state.json"]
    eventually(lambda: try_get(peer, "own/file.bin") == contents[-1], "peer reads latest version")
    eventually(lambda: peer.get_json("own/state.json") == {"n": 2}, "peer reads latest JSON")
    assert peer.list("own") == ["file.bin", "state.json"], "peer lists a rewritten name twice"


def test_reader_only_sees_complete_versions(hub: Hub, peer: Hub) -> None:
    """The atomicity contract: while one writer rewrites a key, readers (the writer's
    own client and another party) see some whole version, never part of one, never
    no file, and the folder lists the name exactly once."""
    key, folder = "atom/k.bin", "atom"
    rng = random.Random(3)
    hub.put_bytes(key, framed(0, b"v0"))
    eventually(lambda: try_get(peer, key) is not None, "peer sees the first version")

    stop = threading.Event()
    errors: list[str] = []
    reads = {"hub": 0, "peer": 0}

    def read(name: str, h: Hub) -> None:
        while not stop.is_set() and len(errors) < 100:
            try:
                unframe(h.get_bytes(key))
                reads[name] += 1
                names = h.list(folder)
                if names != ["k.bin"]:
                    errors.append(f"{name}: list({folder!r}) = {names}")
            except HubNotFound:
                errors.append(f"{name}: key missing during a rewrite")
            except AssertionError as exc:
                errors.append(f"{name}: {exc}")
            except Exception as exc:  # noqa: BLE001 - report, don't kill the thread
                errors.append(f"{name}: {exc!r}")

    readers = [threading.Thread(target=read, args=(n, h), daemon=True)
               for n, h in (("hub", hub), ("peer", peer))]
    for t in readers:
        t.start()
    seq, start = 0, time.monotonic()
    try:
        # At least 5 rewrites; up to 150 or ~3 s, whichever comes first (slow hubs).
        while seq < 5 or (seq < 150 and time.monotonic() - start < 3.0):
            seq += 1
            hub.put_bytes(key, framed(seq, rng.randbytes(rng.choice([0, 10, 4096, 1 << 20]))))
            assert unframe(hub.get_bytes(key)) == seq, "writer does not read its own write"
    finally:
        stop.set()
        for t in readers:
            t.join(60)
    assert not errors, f"{len(errors)}+ violations, e.g. {errors[:3]}"
    assert reads["hub"] > 0 and reads["peer"] > 0, reads
    eventually(lambda: (d := try_get(peer, key)) is not None and unframe(d) == seq,
               "peer reads the last version")


# -------------------------------------------------------------- missing & JSON


def test_get_of_missing_key_raises_hub_not_found(hub: Hub) -> None:
    assert issubclass(HubNotFound, HubError) and issubclass(HubNotFound, OrchError)
    hub.put_bytes("a/file", b"x")
    for key in ["missing", "no/such/key", "a/other", "a/file/below"]:
        with pytest.raises(HubNotFound):
            hub.get_bytes(key)
    with pytest.raises(HubNotFound):
        hub.get_bytes("a")  # a folder is not a file


def test_get_json_of_missing_key_is_none(hub: Hub) -> None:
    assert hub.get_json("missing.json") is None
    assert hub.get_json("no/such/dir/x.json") is None


@pytest.mark.parametrize("raw", [b"not json at all", b'{"truncated": ', b"\xff\xfe\x00garbage",
                                 b"", b"[1, 2, 3]", b'"a string"', b"42", b"null"],
                         ids=["text", "truncated", "binary", "empty", "list", "string",
                              "number", "null"])
def test_get_json_of_non_object_is_none(hub: Hub, raw: bytes) -> None:
    hub.put_bytes("j/x.json", raw)
    assert hub.get_json("j/x.json") is None
    assert hub.get_bytes("j/x.json") == raw  # the bytes are still there


def test_put_json_get_json_round_trip_unicode(hub: Hub) -> None:
    doc = {
        "name": "Zürich ✓ 日本語 🚀",
        "nested": {"list": [1, 2.5, None, True, False, {"deep": "ü\u0000nul"}], "empty": {}},
        "emoji🔑": "value",
        "big": 2**53 + 1,
        "neg": -0.125,
    }
    hub.put_json("runs/j1/1/status.json", doc)
    assert hub.get_json("runs/j1/1/status.json") == doc
    assert json.loads(hub.get_bytes("runs/j1/1/status.json")) == doc


# ---------------------------------------------------------------------- exists


def test_exists_for_files_and_implicit_folders(hub: Hub) -> None:
    assert not hub.exists("x")
    hub.put_bytes("x/y/z/f.txt", b"1")
    assert hub.exists("x/y/z/f.txt")
    assert hub.exists("x")
    assert hub.exists("x/y")
    assert hub.exists("x/y/z")
    assert not hub.exists("x/y/z/g.txt")
    assert not hub.exists("x/y/q")
    assert not hub.exists("x/y/z/f.txt/below")
    hub.put_bytes("empty", b"")
    assert hub.exists("empty")


# ------------------------------------------------------------------------ list


def test_list_immediate_children_sorted(hub: Hub) -> None:
    for name in ["zeta", "alpha", "Mid", "9", "10", "b-c.d"]:
        hub.put_bytes(f"l/{name}", name.encode())
    hub.put_bytes("l/sub/deep/c.txt", b"c")
    hub.put_bytes("l/sub/d.txt", b"d")
    expected = sorted(["zeta", "alpha", "Mid", "9", "10", "b-c.d", "sub"])
    assert hub.list("l") == expected
    assert hub.list("l/sub") == ["d.txt", "deep"]
    assert hub.list("l/sub/deep") == ["c.txt"]


def test_list_missing_folder_or_file_is_empty(hub: Hub) -> None:
    assert hub.list("missing") == []
    assert hub.list("no/such/folder") == []
    hub.put_bytes("f/file.txt", b"x")
    assert hub.list("f/file.txt") == []  # a file is not a folder
    assert hub.list("f/nope") == []


def test_list_root(hub: Hub) -> None:
    assert hub.list("") == []
    hub.put_bytes("top.txt", b"t")
    hub.put_bytes("dir/inner.txt", b"i")
    hub.put_bytes(".hidden-top", b"h")
    assert hub.list("") == ["dir", "top.txt"]


def test_list_never_shows_hidden_names(hub: Hub) -> None:
    hub.put_bytes("h/visible", b"v")
    hub.put_bytes("h/.secret", b"s")
    hub.put_bytes("h/.tmp.part", b"p")
    hub.put_bytes("h/.hiddendir/x", b"x")
    assert hub.list("h") == ["visible"]


# ---------------------------------------------------------------------- delete


def test_delete_file(hub: Hub, peer: Hub) -> None:
    hub.put_bytes("d/a.txt", b"a")
    hub.put_bytes("d/b.txt", b"b")
    hub.delete("d/a.txt")
    assert not hub.exists("d/a.txt")
    with pytest.raises(HubNotFound):
        hub.get_bytes("d/a.txt")
    assert hub.list("d") == ["b.txt"]
    assert hub.get_bytes("d/b.txt") == b"b"
    eventually(lambda: peer.list("d") == ["b.txt"], "peer sees the file deleted")


def test_delete_folder_removes_everything_under_it(hub: Hub) -> None:
    keys = ["tree/a", "tree/b/c", "tree/b/d/e", "tree/.hidden", "tree/b/.h2"]
    for k in keys:
        hub.put_bytes(k, k.encode())
    hub.put_bytes("treehouse", b"sibling with a common prefix")
    hub.put_bytes("other/keep", b"keep")
    hub.delete("tree/b")
    assert not hub.exists("tree/b") and not hub.exists("tree/b/d/e")
    assert hub.list("tree") == ["a"]
    hub.delete("tree")
    for k in [*keys, "tree", "tree/b", "tree/b/d"]:
        assert not hub.exists(k), k
    assert hub.list("tree") == []
    assert hub.list("") == ["other", "treehouse"]
    assert hub.get_bytes("treehouse") == b"sibling with a common prefix"
    assert hub.get_bytes("other/keep") == b"keep"


def test_delete_missing_is_a_noop(hub: Hub) -> None:
    hub.put_bytes("keep/me", b"1")
    hub.delete("never")
    hub.delete("never/nested/deeper")
    hub.delete("keep/absent")
    hub.put_bytes("twice", b"x")
    hub.delete("twice")
    hub.delete("twice")  # idempotent
    assert hub.list("") == ["keep"]
    assert hub.get_bytes("keep/me") == b"1"


def test_delete_below_a_file_is_a_noop(hub: Hub) -> None:
    hub.put_bytes("keep/me", b"1")
    hub.delete("keep/me/below")  # absent: 'keep/me' is a file, not a folder
    assert hub.get_bytes("keep/me") == b"1"


@pytest.mark.parametrize("key", ["f/below", "f/g/h.json"])
def test_put_below_a_file_raises_hub_error(hub: Hub, key: str) -> None:
    hub.put_bytes("f", b"a file")
    with pytest.raises(HubError):
        hub.put_bytes(key, b"x")
    with pytest.raises(HubError):
        hub.put_json(key, {"a": 1})
    assert hub.get_bytes("f") == b"a file"
    assert hub.list("") == ["f"]


def test_delete_then_put_again(hub: Hub, peer: Hub) -> None:
    hub.put_bytes("again/f", b"one")
    hub.delete("again/f")
    hub.put_bytes("again/f", b"two")
    assert hub.get_bytes("again/f") == b"two"
    assert hub.list("again") == ["f"]
    hub.delete("again")
    hub.put_bytes("again/f", b"three")
    assert hub.get_bytes("again/f") == b"three"
    assert hub.list("again") == ["f"]
    assert hub.list("") == ["again"]
    eventually(lambda: try_get(peer, "again/f") == b"three", "peer reads the re-created file")
    assert peer.list("again") == ["f"]


# ------------------------------------------------------------------------ keys


def test_nested_keys(hub: Hub) -> None:
    hub.put_bytes("runs/j1/2/status.json", b"{}")
    hub.put_bytes("a/b/c/d/e/f/g/h.txt", b"deep")
    assert hub.get_bytes("runs/j1/2/status.json") == b"{}"
    assert hub.get_bytes("a/b/c/d/e/f/g/h.txt") == b"deep"
    assert hub.list("runs/j1") == ["2"]
    assert hub.list("a/b/c/d/e/f/g") == ["h.txt"]


def test_names_with_dots_that_are_not_path_parts(hub: Hub) -> None:
    for key in ["a/b..", "a/x.1.json", "a/b..c", "a/x.."]:
        hub.put_bytes(key, key.encode())
        assert hub.get_bytes(key) == key.encode()
    assert hub.list("a") == sorted(["b..", "x.1.json", "b..c", "x.."])


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_raise_hub_error_and_touch_nothing(hub: Hub, tmp_path: Path, key: str) -> None:
    hub.put_bytes("victim/x", b"precious")
    hub.put_bytes("b", b"b")
    before = {name: hub.list(name) for name in ["", "victim", "a"]}
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    dest = tmp_path / "dl" / "dest.bin"
    ops: dict[str, Callable[[], object]] = {
        "put_bytes": lambda: hub.put_bytes(key, b"payload"),
        "put_file": lambda: hub.put_file(key, src),
        "put_json": lambda: hub.put_json(key, {"a": 1}),
        "get_bytes": lambda: hub.get_bytes(key),
        "get_file": lambda: hub.get_file(key, dest),
        "get_json": lambda: hub.get_json(key),
        "exists": lambda: hub.exists(key),
        "delete": lambda: hub.delete(key),
    }
    if key != "":  # list("") is the root
        ops["list"] = lambda: hub.list(key)
    for name, op in ops.items():
        with pytest.raises(HubError):
            op()
            pytest.fail(f"{name}({key!r}) did not raise HubError")
    assert {name: hub.list(name) for name in before} == before
    assert hub.get_bytes("victim/x") == b"precious"
    assert hub.get_bytes("b") == b"b"
    assert not dest.exists()
    assert src.read_bytes() == b"payload"


def test_protocol_keys_are_valid_hub_keys(hub: Hub) -> None:
    """Every key of the protocol, with its typed document, round-trips through the hub."""
    from orchestrator.models import DataRef, GpuNeed, OutputSpec

    w, j = "w-1a2b", "ab12cd34"
    sha = hashlib.sha256(b"blob").hexdigest()
    docs: dict[str, P.Document | None] = {
        P.hub_json(): P.HubInfo(project_id="p1", orch="0.2.0", created_at=1.0),
        P.blob(sha): None,
        P.manifest(j): P.Manifest(job_id=j, name="train", script="train.py", args=("-x",),
                                  env=(("K", "V"),), snapshot=sha,
                                  data=(DataRef("d.csv", sha, 4),),
                                  outputs=(OutputSpec(".", ""),), gpu=GpuNeed.ANY,
                                  autotrack=False, signature="s"),
        P.heartbeat(w): P.Heartbeat(worker_id=w, name="w", host="h", pid=1, seq=1,
                                    state=P.WorkerState.IDLE,
                                    capabilities=P.Capabilities(kind="local")),
        P.inbox(w, j, 1): P.Assignment(job_id=j, attempt=1, worker_id=w, assigned_at=2.0),
        P.status(j, 1): P.RunStatus(job_id=j, attempt=1, worker_id=w, phase=P.Phase.RUNNING,
                                    started_at=3.0, progress={"epoch": 1}),
        P.log(j, 1): None,
        P.metrics(j, 1): None,
        P.result_tar(j, 1): None,
        P.result_json(j, 1): P.Seal(job_id=j, attempt=1, sha256=sha, size=4,
                                    files=(P.SealedFile("0/m.h5", 4),), sealed_at=4.0),
        P.ckpt(j, 1): None,
        P.cancel(j): P.Cancel(job_id=j, at=5.0),
        P.notebook("worker"): None,
    }
    for key, doc in docs.items():
        if doc is None:
            hub.put_bytes(key, key.encode())
        else:
            hub.put_doc(key, doc)
    for key, doc in docs.items():
        assert hub.exists(key), key
        if doc is None:
            assert hub.get_bytes(key) == key.encode()
        else:
            assert hub.get_doc(key, type(doc)) == doc
    assert hub.list("") == sorted(["hub.json", "blobs", "jobs", "workers", "runs", "cancel",
                                   "notebooks"])
    assert hub.list(P.inbox_dir(w)) == [f"{j}.1.json"]
    assert P.parse_inbox_name(hub.list(P.inbox_dir(w))[0]) == (j, 1)
    assert hub.list(P.worker_dir(w)) == ["heartbeat.json", "inbox"]
    assert hub.list(P.ckpt_dir(j)) == ["1.tar"]
    assert [P.parse_ckpt_name(n) for n in hub.list(P.ckpt_dir(j))] == [1]
    assert hub.list(f"runs/{j}") == ["1", "ckpt"]
    assert hub.list(P.run_dir(j, 1)) == sorted(
        ["status.json", "log.txt", "metrics.jsonl", "result.tar", "result.json"])
    hub.delete(P.inbox(w, j, 1))
    assert hub.list(P.inbox_dir(w)) == []


def test_documents_of_another_protocol_version_are_refused_in_one_line(hub: Hub) -> None:
    from orchestrator.errors import ProtocolError

    hub.put_json(P.heartbeat("old"), {"worker_id": "old", "seq": 1, "state": "idle"})
    with pytest.raises(ProtocolError, match="protocol 1; this orch speaks protocol"):
        hub.get_doc(P.heartbeat("old"), P.Heartbeat)
    hub.put_json(P.status("j", 1), {"protocol": P.PROTOCOL_VERSION, "job_id": "j"})
    with pytest.raises(ProtocolError, match="missing 'attempt'"):
        hub.get_doc(P.status("j", 1), P.RunStatus)
    assert hub.get_doc("no/such.json", P.RunStatus) is None


# ------------------------------------------------------------------ local_path


def test_local_path_is_none_or_holds_the_bytes(hub: Hub) -> None:
    hub.put_bytes("lp/file.bin", b"local?")
    path = hub.local_path("lp/file.bin")
    if path is not None:
        assert Path(path).read_bytes() == b"local?"


# ----------------------------------------------------------------- concurrency


def test_concurrent_writers_of_different_keys_all_land(hub: Hub, peer: Hub) -> None:
    """Four threads share one client and write distinct keys, partly into a folder
    none of them has created yet (on Drive: no duplicate folders)."""
    n_threads, per_thread = 4, 10
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def content(t: int, i: int) -> bytes:
        return f"thread {t} item {i} ".encode() * (1 + 97 * i)

    def write(t: int) -> None:
        try:
            barrier.wait(30)
            for i in range(per_thread):
                hub.put_bytes(f"c/shared/t{t}-{i:02d}", content(t, i))
                hub.put_bytes(f"c/t{t}/k{i:02d}", content(t, i))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,), daemon=True) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(240)
    assert not any(th.is_alive() for th in threads), "a writer thread hung"
    assert not errors, errors[:3]

    shared = sorted(f"t{t}-{i:02d}" for t in range(n_threads) for i in range(per_thread))
    top = sorted(["shared", *(f"t{t}" for t in range(n_threads))])
    for t in range(n_threads):
        for i in range(per_thread):
            assert hub.get_bytes(f"c/shared/t{t}-{i:02d}") == content(t, i)
            assert hub.get_bytes(f"c/t{t}/k{i:02d}") == content(t, i)
        assert hub.list(f"c/t{t}") == [f"k{i:02d}" for i in range(per_thread)]
    assert hub.list("c/shared") == shared
    assert hub.list("c") == top
    eventually(lambda: peer.list("c/shared") == shared, "peer lists every shared key once")
    eventually(lambda: peer.list("c") == top, "peer lists each folder once")


# ----------------------------------------------------------------------- watch


def _drain(watcher: Any, rounds: int = 10) -> None:
    """Consume pending wake-ups (bounded: a watcher that always wakes is caught later)."""
    for _ in range(rounds):
        if not watcher.wait(0.2):
            return


def test_watch_wakes_on_another_partys_write(hub: Hub, peer: Hub) -> None:
    watcher = hub.watch()
    try:
        assert callable(watcher.wait) and callable(watcher.close)
        _drain(watcher)
        for n, key in enumerate(["runs/jw/1/result.json", "workers/w9/heartbeat.json"]):
            peer.put_json(key, {"n": n})  # into folders that did not exist when watching began
            eventually(lambda: watcher.wait(1.0) is True, f"watcher woken by {key}")
            expected: dict[str, Any] = {"n": n}

            def readable(k: str = key, want: dict[str, Any] = expected) -> bool:
                return hub.get_json(k) == want

            eventually(readable, f"hub reads {key}")
            _drain(watcher)
    finally:
        watcher.close()
    watcher.close()  # closing twice is safe


def test_watch_close_without_waiting(hub: Hub) -> None:
    for _ in range(3):
        w = hub.watch()
        w.close()
        w.close()
