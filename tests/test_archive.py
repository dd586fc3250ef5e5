"""Deterministic tars and safe extraction (orchestrator.archive). Malicious
archives are built with tarfile directly, member by member."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.archive import (
    HashingWriter,
    safe_extract,
    sha256_file,
    tree_files,
    write_tar,
)
from orchestrator.errors import PullError, UnsafeArchiveError


def make_tree(root: Path, mtime: float | None = None) -> list[tuple[str, Path]]:
    files = {
        "train.py": b"print('hi')\n",
        "pkg/__init__.py": b"",
        "pkg/util.py": b"X = 1\n" * 100,
        "data/blob.bin": bytes(range(256)) * 40,
    }
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        if mtime is not None:
            os.utime(p, (mtime, mtime))
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    return tree_files(root)


def tar_bytes(files: list[tuple[str, Path]], compress: bool = True) -> bytes:
    buf = io.BytesIO()
    write_tar(buf, files, compress=compress)
    return buf.getvalue()


# ---- write_tar -----------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_write_tar_is_byte_deterministic(tmp_path: Path, compress: bool) -> None:
    a = make_tree(tmp_path / "a", mtime=1_000_000)
    b = make_tree(tmp_path / "b", mtime=2_000_000)  # same content, other place and times
    first = tar_bytes(a, compress)
    assert first == tar_bytes(a, compress)
    assert first == tar_bytes(list(reversed(b)), compress)  # input order does not matter
    assert first == tar_bytes(b, compress)


def test_write_tar_changes_when_content_or_mode_changes(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "a")
    base = tar_bytes(files)
    (tmp_path / "a" / "pkg" / "util.py").write_bytes(b"X = 2\n" * 100)
    changed = tar_bytes(files)
    assert changed != base
    (tmp_path / "a" / "train.py").chmod(0o755)
    assert tar_bytes(files) != changed
    renamed = [(("pkg/other.py" if n == "pkg/util.py" else n), p) for n, p in files]
    assert tar_bytes(renamed) != tar_bytes(files)


def test_write_tar_normalises_metadata(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "a", mtime=1_234_567)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes(files)), mode="r:gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(n for n, _ in files)
        for m in members:
            assert m.isfile()
            assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
            assert m.mtime == members[0].mtime != 1_234_567
            assert m.mode == (0o755 if m.name == "run.sh" else 0o644)
            f = tar.extractfile(m)
            assert f is not None
            assert f.read() == (tmp_path / "a" / m.name).read_bytes()


def test_gzip_header_has_no_timestamp(tmp_path: Path) -> None:
    data = tar_bytes(make_tree(tmp_path / "a"))
    assert data[:2] == b"\x1f\x8b"
    assert data[4:8] == b"\x00\x00\x00\x00"  # MTIME field of the gzip header
    assert gzip.decompress(data)  # and it is a valid gzip stream


def test_write_tar_bytes_do_not_depend_on_the_output_file_name(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "a")
    with open(tmp_path / "one.tar.gz", "wb") as f:
        write_tar(f, files)
    with open(tmp_path / "another-name.tar.gz", "wb") as f:
        write_tar(f, files)
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "another-name.tar.gz").read_bytes()


def test_hashing_writer_matches_sha256_file(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "a")
    out = tmp_path / "x.tar.gz"
    with open(out, "wb") as raw:
        writer = HashingWriter(raw)
        write_tar(writer, files)  # type: ignore[arg-type]
    assert writer.hash.hexdigest() == sha256_file(out)
    assert writer.size == out.stat().st_size
    assert sha256_file(out) == hashlib.sha256(out.read_bytes()).hexdigest()


def test_tree_files_lists_regular_files_only(tmp_path: Path) -> None:
    root = tmp_path / "t"
    make_tree(root)
    (root / "empty_dir").mkdir()
    (root / "dangling").symlink_to(root / "nowhere")
    names = [n for n, _ in tree_files(root)]
    assert len(names) == len(set(names))
    assert set(names) == {"train.py", "pkg/__init__.py", "pkg/util.py", "data/blob.bin", "run.sh"}


# ---- safe_extract: accepted --------------------------------------------------------


def test_round_trip_through_safe_extract(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src")
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_bytes(files))
    dest = tmp_path / "dest"
    names = safe_extract(archive, dest)
    assert sorted(names) == sorted(n for n, _ in files)
    for name, src in files:
        assert (dest / name).read_bytes() == src.read_bytes()
    assert os.access(dest / "run.sh", os.X_OK)


def test_accepts_a_normal_archive_with_dirs_and_inner_links(tmp_path: Path) -> None:
    archive = tmp_path / "ok.tar"
    with tarfile.open(archive, "w") as tar:
        add_dir(tar, "model")
        add_file(tar, "model/saved_model.pb", b"pb")
        add_file(tar, "model/variables/variables.index", b"idx")
        add_link(tar, "latest", "model/saved_model.pb", tarfile.SYMTYPE)
        add_link(tar, "model/alias", "../latest", tarfile.SYMTYPE)  # ../ but still inside
        add_link(tar, "copy.pb", "model/saved_model.pb", tarfile.LNKTYPE)
    dest = tmp_path / "dest"
    names = safe_extract(archive, dest)
    assert set(names) == {"model", "model/saved_model.pb", "model/variables/variables.index",
                          "latest", "model/alias", "copy.pb"}
    assert (dest / "latest").is_symlink()
    assert (dest / "latest").read_bytes() == b"pb"
    assert (dest / "model" / "alias").read_bytes() == b"pb"
    assert (dest / "copy.pb").read_bytes() == b"pb"
    assert (dest / "model/variables/variables.index").read_bytes() == b"idx"


# ---- safe_extract: refused ---------------------------------------------------------


def add_file(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def add_link(tar: tarfile.TarFile, name: str, target: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tar.addfile(info)


def add_special(tar: tarfile.TarFile, name: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    tar.addfile(info)


def build(path: Path, evil: Callable[[tarfile.TarFile], None], gz: bool = False) -> Path:
    """A harmless file first (it must not be written either), then the evil member,
    then another harmless one."""
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        add_file(tar, "aaa_good.txt", b"good")
        add_dir(tar, "sub")
        add_file(tar, "sub/also_good.txt", b"good")
        evil(tar)
        add_file(tar, "zzz_good.txt", b"good")
    return path


def _outside(tmp_path: Path) -> Path:
    return tmp_path / "outside"


EVIL = {
    "absolute_path": lambda t, o: add_file(t, str(o / "abs.txt"), b"evil"),
    "absolute_root": lambda t, o: add_file(t, "/etc/orch-test-evil", b"evil"),
    "dotdot": lambda t, o: add_file(t, "../outside/dotdot.txt", b"evil"),
    "dotdot_nested": lambda t, o: add_file(t, "sub/../../outside/nested.txt", b"evil"),
    "dotdot_dot_prefix": lambda t, o: add_file(t, "./../outside/dot.txt", b"evil"),
    "bare_dotdot": lambda t, o: add_dir(t, ".."),
    "symlink_absolute": lambda t, o: add_link(t, "sub/link", str(o), tarfile.SYMTYPE),
    "symlink_etc": lambda t, o: add_link(t, "passwd", "/etc/passwd", tarfile.SYMTYPE),
    "symlink_relative_escape": lambda t, o: add_link(t, "sub/link", "../../outside",
                                                     tarfile.SYMTYPE),
    "symlink_to_parent": lambda t, o: add_link(t, "up", "..", tarfile.SYMTYPE),
    "hardlink_relative_escape": lambda t, o: add_link(t, "hl", "../outside/target.txt",
                                                      tarfile.LNKTYPE),
    "hardlink_absolute": lambda t, o: add_link(t, "hl", "/etc/passwd", tarfile.LNKTYPE),
    "char_device": lambda t, o: add_special(t, "null", tarfile.CHRTYPE),
    "block_device": lambda t, o: add_special(t, "disk", tarfile.BLKTYPE),
    "fifo": lambda t, o: add_special(t, "pipe", tarfile.FIFOTYPE),
}


@pytest.mark.parametrize("gz", [False, True], ids=["tar", "tgz"])
@pytest.mark.parametrize("kind", sorted(EVIL))
def test_unsafe_archive_is_refused_whole(tmp_path: Path, kind: str, gz: bool) -> None:
    outside = _outside(tmp_path)
    outside.mkdir()
    (outside / "target.txt").write_text("precious")
    archive = build(tmp_path / ("evil.tgz" if gz else "evil.tar"),
                    lambda t: EVIL[kind](t, outside), gz=gz)
    dest = tmp_path / "work" / "dest"
    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(archive, dest)
    assert isinstance(info.value, PullError)
    # nothing at all was written into dest, and nothing outside it
    assert not dest.exists() or list(dest.iterdir()) == []
    assert sorted(p.name for p in outside.iterdir()) == ["target.txt"]
    assert (outside / "target.txt").read_text() == "precious"
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) in ([], ["dest"])
    assert not Path("/etc/orch-test-evil").exists()


def test_symlink_chain_escape_is_refused_before_writing(tmp_path: Path) -> None:
    archive = tmp_path / "chain.tar"
    with tarfile.open(archive, "w") as tar:
        add_link(tar, "a", ".", tarfile.SYMTYPE)
        add_link(tar, "b", "a/..", tarfile.SYMTYPE)  # textually inside, really dest/..
        add_file(tar, "b/evil.txt", b"evil")
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert not dest.exists() or list(dest.iterdir()) == []


@pytest.mark.parametrize("content", [
    b"", b"not a tar at all" * 64,
    b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 50,  # bad deflate data
], ids=["empty", "text", "bad_deflate"])
def test_unreadable_archive_is_refused(tmp_path: Path, content: bytes) -> None:
    archive = tmp_path / "junk.tar"
    archive.write_bytes(content)
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, dest)
    assert not dest.exists() or list(dest.iterdir()) == []


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.99, "garbage"])
def test_truncated_or_garbled_targz_is_refused(tmp_path: Path, cut: float | str) -> None:
    files = make_tree(tmp_path / "src")
    (tmp_path / "src" / "data" / "blob.bin").write_bytes(os.urandom(200_000))
    whole = tar_bytes(files, compress=True)
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08garbage" if cut == "garbage"
                        else whole[: int(len(whole) * float(cut))])
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, dest)
    assert not dest.exists() or list(dest.iterdir()) == []


def test_truncated_archive_is_refused(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src")
    whole = tar_bytes(files, compress=False)
    archive = tmp_path / "cut.tar"
    archive.write_bytes(whole[: len(whole) // 2 + 100])
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, tmp_path / "dest")
