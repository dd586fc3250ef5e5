"""Code snapshots (git-aware, .orchignore, never credentials) and the
content-addressed blob store (orchestrator.bundle)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from orchestrator import snapshot
from orchestrator.archive import safe_extract, sha256_file
from orchestrator.bundle import BlobStore, add_data, take_snapshot
from orchestrator.errors import BundleError, UsageError

from .conftest import write

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")

#: Never shipped, wherever they are.
SECRETS = [".env", ".env.local", "client_secrets.json", "client_secrets_123.json",
           "token.json", "credentials.json", "key.pem"]
#: Folders never shipped, wherever they are.
JUNK_DIRS = [".git", ".orch", "__pycache__", ".venv"]


def names(root: Path, exclude: set[str] = frozenset(), **kw: object) -> set[str]:  # type: ignore[assignment]
    files = snapshot.plan(root, frozenset(exclude), **kw).files  # type: ignore[arg-type]
    for rel, path in files:
        assert path == root.resolve() / rel
    return {rel for rel, _ in files}


def snap(root: Path, blobs: BlobStore, data: set[str], outputs_dir: str, max_mb: float,
         ) -> tuple[str, int, list[str]]:
    """Pack ``root`` as submit does: ``(sha256, size, names shipped)``."""
    listed = snapshot.plan(root, frozenset(data), outputs_dir, sniff=False)
    sha, size, final = take_snapshot(blobs, listed, max_mb)
    return sha, size, [name for name, _ in final.files]


def git(root: Path, *args: str) -> str:
    assert GIT is not None
    proc = subprocess.run(
        [GIT, "-c", "user.name=orch tests", "-c", "user.email=tests@example.com",
         "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args],
        cwd=root, capture_output=True, text=True, check=True,
        env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"},
    )
    return proc.stdout


# ---- what is never shipped ---------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "pkg/", "pkg/deep/er/"], ids=["top", "nested", "deep"])
def test_credentials_and_junk_are_never_shipped(tmp_path: Path, prefix: str) -> None:
    root = tmp_path / "proj"
    keep = {"train.py", f"{prefix}code.py", f"{prefix}config.json", f"{prefix}env.py",
            f"{prefix}keys.py", f"{prefix}environment.yml"}
    for rel in keep:
        write(root, rel)
    for secret in SECRETS:
        write(root, prefix + secret, "SECRET")
    for folder in JUNK_DIRS:
        write(root, f"{prefix}{folder}/inside.py", "junk")
        write(root, f"{prefix}{folder}/sub/deeper.txt", "junk")
    write(root, f"{prefix}mod.pyc", b"\0")
    got = names(root)
    assert got == keep
    assert not any("SECRET" in (root / rel).read_text() for rel in got)


def test_outputs_folder_is_not_shipped(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    write(root, "train.py")
    write(root, "models/old_run/saved_model.pb", b"big")
    write(root, "models/mnist.h5", b"big")
    write(root, "models.py")  # a module that merely shares the name
    write(root, "src/models/resnet.py")  # code in a nested folder called models
    assert names(root) == {"train.py", "models.py", "src/models/resnet.py"}
    # another outputs folder setting moves the exclusion
    assert names(root, outputs_dir="out/") == {
        "train.py", "models.py", "src/models/resnet.py", "models/old_run/saved_model.pb",
        "models/mnist.h5"}


def test_exclude_drops_data_paths_on_path_boundaries(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    for rel in ("train.py", "data/a.csv", "data/sub/b.csv", "database.py", "big.npz"):
        write(root, rel)
    assert names(root, exclude={"data", "big.npz"}) == {"train.py", "database.py"}
    assert names(root, exclude={"data/"}) == {"train.py", "database.py", "big.npz"}


def test_dangling_symlinks_drop_out(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    write(root, "train.py")
    (root / "broken").symlink_to(root / "nowhere")
    assert names(root) == {"train.py"}


def test_tokenizer_json_is_not_mistaken_for_a_credential(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    write(root, "train.py")
    write(root, "tokenizer.json", '{"word_index": {}}')
    assert names(root) == {"train.py", "tokenizer.json"}


# ---- .orchignore -------------------------------------------------------------------

ORCHIGNORE_CASES = {
    "glob": ("*.csv\n", {"a.csv", "d/b.csv", "d/e/c.csv"}, {"a.py", "csv.py", "a.csv.py"}),
    "question_mark": ("run?.log\n", {"run1.log", "d/run2.log"}, {"run10.log", "run.log"}),
    "comments_and_blanks": ("# *.py\n\n   \n*.tmp\n", {"x.tmp"}, {"keep.py"}),
    "dir_pattern": ("build/\n", {"build/a.o", "src/build/b.o"}, {"out/build", "src/build.py"}),
    "dir_pattern_nested_path": ("cache/\n", {"x/cache/y/z.bin"}, {"cache.py", "y/cache"}),
    "anchored": ("/data\n", {"data/a.csv", "data/sub/b.csv"},
                 {"src/data/a.csv", "database.py", "lib/data"}),
    "anchored_file": ("/notes.txt\n", {"notes.txt"}, {"sub/notes.txt", "notes.txt.py"}),
    "anchored_with_slash": ("docs/*.md\n", {"docs/a.md"},
                            {"sub/docs/a.md", "docs/sub/b.md", "a.md"}),
    "double_star_prefix": ("**/logs\n", {"logs/a", "x/logs/b", "x/y/logs"}, {"logsx/a"}),
    "double_star_middle": ("a/**/z.txt\n", {"a/z.txt", "a/b/z.txt", "a/b/c/z.txt"},
                           {"b/a/z.txt", "a/z.txt.bak"}),
    "double_star_suffix": ("vendor/**\n", {"vendor/a.py", "vendor/b/c.py"}, {"vendor.py"}),
    "negation": ("*.csv\n!keep.csv\n", {"a.csv", "d/b.csv"}, {"keep.csv", "d/keep.csv"}),
    "negation_then_reignore": ("*.csv\n!*.csv\nbad.csv\n", {"bad.csv"}, {"good.csv"}),
    "last_rule_wins": ("!x.txt\nx.txt\n", {"x.txt"}, {"y.txt"}),
    "negate_dir_content": ("*.bin\n!weights/*.bin\n", {"a.bin", "x/b.bin"},
                           {"weights/w.bin"}),
    "exact_name_any_depth": ("secret_notes.txt\n", {"secret_notes.txt", "a/secret_notes.txt"},
                             {"secret_notes.txt.py"}),
}


@pytest.mark.parametrize("case", sorted(ORCHIGNORE_CASES))
def test_orchignore(tmp_path: Path, case: str) -> None:
    rules, dropped, kept = ORCHIGNORE_CASES[case]
    root = tmp_path / "proj"
    write(root, ".orchignore", rules)
    for rel in dropped | kept:
        write(root, rel)
    got = names(root)
    assert got & dropped == set(), f"should be ignored: {sorted(got & dropped)}"
    assert kept <= got, f"should be kept: {sorted(kept - got)}"
    # the ignore file itself is part of the code, and without it everything comes back
    (root / ".orchignore").unlink()
    assert dropped | kept <= names(root)


def test_orchignore_cannot_re_include_credentials(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    write(root, ".orchignore", "!.env\n!token.json\n!.orch/\n!key.pem\n")
    for rel in ("train.py", ".env", "token.json", ".orch/state.db", "key.pem"):
        write(root, rel)
    assert names(root) == {"train.py", ".orchignore"}


# ---- git-aware -----------------------------------------------------------------------


@needs_git
def test_git_aware_snapshot(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    write(root, ".gitignore", "*.csv\nlogs/\nscratch.py\n")
    write(root, "train.py")
    write(root, "pkg/util.py")
    write(root, "credentials.json", "SECRET")  # tracked by mistake
    write(root, ".env", "SECRET=1")  # tracked by mistake
    write(root, "pkg/.env.local", "SECRET=1")  # tracked by mistake
    write(root, "forced.csv", "a,b")  # ignored, but force-added: tracked
    write(root, "gone.py")  # tracked, deleted from disk afterwards
    git(root, "add", "-A")
    git(root, "add", "-f", "forced.csv")
    git(root, "commit", "-q", "-m", "init")
    (root / "gone.py").unlink()
    write(root, "new_module.py")  # untracked, not ignored
    write(root, "pkg/new_data.json")  # untracked, not ignored
    write(root, "data.csv", "1,2")  # untracked, ignored
    write(root, "pkg/more.csv", "1,2")  # untracked, ignored (nested)
    write(root, "logs/run.txt")  # untracked, ignored folder
    write(root, "scratch.py")  # untracked, ignored by name
    write(root, "token.json", "SECRET")  # untracked, not ignored, but a credential
    write(root, "models/out.h5", b"model")  # the outputs folder
    tracked = set(git(root, "ls-files").split())
    assert {"credentials.json", ".env", "forced.csv"} <= tracked  # the setup is as meant

    assert names(root) == {".gitignore", "train.py", "pkg/util.py", "forced.csv",
                           "new_module.py", "pkg/new_data.json"}


@needs_git
def test_git_aware_snapshot_honours_orchignore_too(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    write(root, ".gitignore", "*.log\n")
    write(root, ".orchignore", "notebooks/\n")
    write(root, "train.py")
    write(root, "notebooks/explore.ipynb")
    write(root, "a.log")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    assert names(root) == {".gitignore", ".orchignore", "train.py"}


@needs_git
def test_project_in_a_subfolder_of_a_git_repo(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    root = repo / "problems" / "mnist"
    root.mkdir(parents=True)
    git(repo, "init", "-q")
    write(repo, ".gitignore", "*.npz\n")
    write(repo, "README.md")  # outside the project: not in its snapshot
    write(repo, "problems/other/train.py")
    write(root, "train.py")
    write(root, "lib/net.py")
    write(root, "x.npz", b"data")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    write(root, "untracked.py")
    assert names(root) == {"train.py", "lib/net.py", "untracked.py"}


@needs_git
def test_git_filenames_with_odd_characters(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    odd = {"with space.py", "ünï cödé.py", "quote\"d.py", "tab\tname.py"}
    for rel in odd:
        write(root, rel)
    git(root, "add", "-A")
    assert names(root) == odd


# ---- blobs ---------------------------------------------------------------------------


def blob_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def make_project(root: Path) -> None:
    write(root, "train.py", "print('train')\n")
    write(root, "pkg/net.py", "N = 3\n" * 50)
    write(root, ".env", "SECRET=1")
    write(root, "models/old.h5", b"old")


def test_same_tree_twice_is_one_blob(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    make_project(root)
    blobs = BlobStore(tmp_path / "blobs")
    sha1, size1, files1 = snap(root, blobs, set(), "models", max_mb=10)
    os.utime(root / "train.py", (1, 1))  # a touch changes nothing
    sha2, size2, files2 = snap(root, blobs, set(), "models", max_mb=10)
    assert (sha1, size1, files1) == (sha2, size2, files2)
    assert sorted(files1) == ["pkg/net.py", "train.py"]
    assert blob_files(blobs.folder) == [sha1]  # one blob, no temporary left behind
    assert blobs.has(sha1) and sha256_file(blobs.path(sha1)) == sha1
    assert blobs.path(sha1).stat().st_size == size1
    # the blob is the snapshot, and holds no secret and no outputs
    out = tmp_path / "unpacked"
    assert sorted(safe_extract(blobs.path(sha1), out)) == ["pkg/net.py", "train.py"]
    assert (out / "train.py").read_text() == "print('train')\n"


def test_changed_tree_is_a_new_blob(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    make_project(root)
    blobs = BlobStore(tmp_path / "blobs")
    sha1, _, _ = snap(root, blobs, set(), "models", max_mb=10)
    write(root, "pkg/net.py", "N = 4\n")
    sha2, _, _ = snap(root, blobs, set(), "models", max_mb=10)
    assert sha1 != sha2
    assert blob_files(blobs.folder) == sorted([sha1, sha2])
    # a change to an excluded file changes nothing
    write(root, ".env", "SECRET=2")
    write(root, "models/new.h5", b"new")
    assert snap(root, blobs, set(), "models", max_mb=10)[0] == sha2


def test_same_tree_in_two_places_is_one_blob(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    make_project(tmp_path / "a")
    make_project(tmp_path / "b")
    assert (snap(tmp_path / "a", blobs, set(), "models", 10)[0]
            == snap(tmp_path / "b", blobs, set(), "models", 10)[0])
    assert len(blob_files(blobs.folder)) == 1


def test_snapshot_size_limit(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    write(root, "train.py")
    write(root, "huge_weights.bin", os.urandom(300_000))
    write(root, "medium.npz", os.urandom(200_000))
    write(root, "small.txt", "s")
    blobs = BlobStore(tmp_path / "blobs")
    with pytest.raises(BundleError) as info:
        snap(root, blobs, set(), "models", max_mb=0.25)
    msg = str(info.value)
    assert isinstance(info.value, UsageError)  # the CLI exits 2 for it
    assert "huge_weights.bin" in msg and "medium.npz" in msg
    assert msg.index("huge_weights.bin") < msg.index("medium.npz")  # biggest first
    assert ".orchignore" in msg and "--data" in msg and "limit" in msg
    assert blob_files(blobs.folder) == []  # nothing stored
    # shipping the big files as data brings it under the limit
    sha, _, files = snap(root, blobs, {"huge_weights.bin", "medium.npz"}, "models",
                                  max_mb=0.25)
    assert sorted(files) == ["small.txt", "train.py"] and blobs.has(sha)


def test_add_data_same_content_twice_is_one_blob(tmp_path: Path, monkeypatch:
                                                 pytest.MonkeyPatch) -> None:
    root = tmp_path / "proj"
    content = os.urandom(5000)
    write(root, "data/train.csv", content)
    write(root, "data/copy.csv", content)
    monkeypatch.chdir(root)
    blobs = BlobStore(tmp_path / "blobs")
    first = add_data(root, blobs, "data/train.csv")
    again = add_data(root, blobs, str(root / "data" / "train.csv"))
    copy = add_data(root, blobs, "data/copy.csv")
    assert (first.path, first.kind, first.size) == ("data/train.csv", "file", 5000)
    assert first.sha256 == again.sha256 == copy.sha256
    assert copy.path == "data/copy.csv"
    assert blob_files(blobs.folder) == [first.sha256]
    assert blobs.path(first.sha256).read_bytes() == content


def test_add_data_outside_the_project_lands_at_its_base_name(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    ext = write(tmp_path / "elsewhere", "big.npz", b"npz")
    ref = add_data(root, BlobStore(tmp_path / "blobs"), str(ext))
    assert (ref.path, ref.kind, ref.size) == ("big.npz", "file", 3)


def test_add_data_dir(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    write(root, "images/cats/1.png", b"cat1")
    write(root, "images/dogs/1.png", b"dog1")
    write(root, "images/labels.txt", "cats\ndogs\n")
    blobs = BlobStore(tmp_path / "blobs")
    ref = add_data(root, blobs, str(root / "images"))
    assert (ref.path, ref.kind) == ("images", "dir")
    assert blobs.has(ref.sha256)
    assert ref.size == blobs.path(ref.sha256).stat().st_size
    with tarfile.open(blobs.path(ref.sha256)) as tar:
        assert sorted(tar.getnames()) == ["cats/1.png", "dogs/1.png", "labels.txt"]
    out = tmp_path / "placed"
    safe_extract(blobs.path(ref.sha256), out)
    assert (out / "dogs" / "1.png").read_bytes() == b"dog1"
    # the same folder again is the same blob
    assert add_data(root, blobs, str(root / "images")).sha256 == ref.sha256
    assert len(blob_files(blobs.folder)) == 1


def test_add_data_missing_path(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    with pytest.raises(BundleError) as info:
        add_data(root, BlobStore(tmp_path / "blobs"), str(root / "nope.csv"))
    assert "nope.csv" in str(info.value)


def test_blobstore_add_file_is_idempotent_and_atomic(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    src = write(tmp_path, "f.bin", os.urandom(1000))
    sha, size = blobs.add_file(src)
    mtime = blobs.path(sha).stat().st_mtime_ns
    assert blobs.add_file(src) == (sha, size)
    assert blobs.path(sha).stat().st_mtime_ns == mtime  # not rewritten
    assert blob_files(blobs.folder) == [sha]
    assert not blobs.has("0" * 64)
