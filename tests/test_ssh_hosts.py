"""`orch hosts` through the real CLI, against a real OpenSSH server on 127.0.0.1 (the
``sshd`` fixture, tests/sshd.py): add, list, check, trust, remove; an unknown host key
refused with its fingerprint and the command that accepts it; and every way a host
can be wrong (bad destination or name, key, sign-in, reachability, Python,
TensorFlow, disk) as one ``orch: error:`` line that leaves ``.orch/hosts.json`` as
it was. Also what `orch submit --on ssh:…` says about hosts."""

from __future__ import annotations

import json
import platform
import stat
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from tests.sshd import Sshd, fingerprint_of, free_port

pytestmark = pytest.mark.timeout(300)

Orch = Callable[..., subprocess.CompletedProcess[str]]

NO_TF_CHECK = ("import sys, importlib.util; sys.exit(0 if sys.version_info >= (3, 11) and "
               "importlib.util.find_spec('tensorflow') is None else 1)")


# ---- helpers -------------------------------------------------------------------------


def one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The single ``orch: error:`` line a refused command printed (exit non-zero, no
    traceback, nothing else on stderr); it must contain every fragment."""
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"exited 0:\n{output}"
    assert "Traceback" not in output, output
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"not one line on stderr:\n{proc.stderr}"
    line = lines[0]
    assert line.startswith("orch: error: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in: {line}"
    return line


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """``proc``, asserted to have exited 0 without a traceback."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def state(project_dir: Path) -> Path:
    return project_dir / ".orch"


def hosts_json(project_dir: Path) -> dict[str, Any]:
    return json.loads((state(project_dir) / "hosts.json").read_text())


def host_status(project_dir: Path, name: str) -> dict[str, Any]:
    return json.loads((state(project_dir) / "host-status" / f"{name}.json").read_text())


def add(orch: Orch, sshd: Sshd, tmp_path: Path, name: str = "box", *extra: str,
        key: Path | None = None, python: str = sys.executable,
        port: int | None = None) -> subprocess.CompletedProcess[str]:
    """`orch hosts add NAME user@127.0.0.1:PORT --key K --python P --workdir tmp/host`."""
    return orch("hosts", "add", name, f"{sshd.user}@127.0.0.1:{port or sshd.port}",
                "--key", str(key or sshd.user_key), "--python", python,
                "--workdir", str(tmp_path / "host"), *extra)


def trusted(orch: Orch, sshd: Sshd, tmp_path: Path, name: str = "box", **kw: Any) -> None:
    """Add host ``name`` and trust the sshd's host key for it."""
    ok(add(orch, sshd, tmp_path, name, **kw))
    ok(orch("hosts", "trust", name, "--fingerprint", sshd.fingerprint))


def other_key(tmp_path: Path) -> Path:
    """A fresh ed25519 key (no passphrase) that the sshd does not authorize."""
    key = tmp_path / "other_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "not-authorized",
                    "-f", str(key)], check=True, capture_output=True, timeout=30)
    return key


def python_without_tf(tmp_path: Path) -> str:
    """A Python >= 3.11 that cannot import TensorFlow: the base interpreter or the
    system's if one fits (checked by running it), else a new venv without the system's
    site-packages."""
    base = getattr(sys, "_base_executable", "") or sys.executable
    for candidate in (base, "/usr/bin/python3"):
        if Path(candidate).is_file() and subprocess.run(
                [candidate, "-c", NO_TF_CHECK], capture_output=True, timeout=60).returncode == 0:
            return candidate
    venv = tmp_path / "no-tf-venv"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True,
                   capture_output=True, timeout=120)
    python = str(venv / "bin" / "python")
    assert subprocess.run([python, "-c", NO_TF_CHECK], timeout=60).returncode == 0
    return python


def tf_version() -> str:
    """The TensorFlow version this venv has (what the host probe must report)."""
    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    pytest.fail("the test venv has no TensorFlow")


# ---- the whole life of a host --------------------------------------------------------


def test_add_list_refuse_trust_check_remove(orch: Orch, project_dir: Path, sshd: Sshd,
                                            tmp_path: Path) -> None:
    """add → list (text and --json) → check refused for the unknown host key (its
    fingerprint and the trust command in one line) → trust with a wrong fingerprint
    refused (nothing written) → trust with the right one → check reports Python,
    TensorFlow and disk and writes host-status → remove."""
    out = ok(add(orch, sshd, tmp_path)).stdout
    assert "added host box" in out and "orch hosts check box" in out
    destination = f"{sshd.user}@127.0.0.1:{sshd.port}"
    [line] = ok(orch("hosts", "list")).stdout.splitlines()
    assert line.split()[:2] == ["box", destination] and "not checked yet" in line
    [entry] = json.loads(ok(orch("hosts", "list", "--json")).stdout)
    assert entry == {"name": "box", "user": sshd.user, "address": "127.0.0.1",
                     "port": sshd.port, "key": str(sshd.user_key), "python": sys.executable,
                     "workdir": str(tmp_path / "host"), "status": None}

    known_hosts = state(project_dir) / "known_hosts"
    line = one_line_error(orch("hosts", "check", "box"), sshd.fingerprint,
                          f"orch hosts trust box --fingerprint {sshd.fingerprint}")
    assert "not known" in line
    assert not known_hosts.exists()
    assert " ok: " not in ok(orch("hosts", "list")).stdout

    wrong = fingerprint_of(sshd.user_key_pub)  # a real fingerprint, of another key
    one_line_error(orch("hosts", "trust", "box", "--fingerprint", wrong), wrong,
                   sshd.fingerprint, "nothing was trusted")
    assert not known_hosts.exists()

    out = ok(orch("hosts", "trust", "box", "--fingerprint", sshd.fingerprint)).stdout
    assert sshd.fingerprint in out
    assert known_hosts.read_text() == sshd.known_hosts_line + "\n"
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600
    ok(orch("hosts", "trust", "box", "--fingerprint", sshd.fingerprint))
    assert known_hosts.read_text() == sshd.known_hosts_line + "\n", "trust is not idempotent"

    out = ok(orch("hosts", "check", "box")).stdout
    python, tf = platform.python_version(), tf_version()
    assert f"({python})" in out and tf in out and "free disk" in out, out
    assert "host box is ready" in out and "--on ssh:box" in out
    status = host_status(project_dir, "box")
    assert status["problem"] == "" and status["python"] == python
    assert status["tensorflow"] == tf
    assert status["home"] == str(tmp_path / "host") and status["free_mb"] > 0
    assert (tmp_path / "host" / "hub").is_dir(), "the probe did not make the host's hub folder"
    [line] = ok(orch("hosts", "list")).stdout.splitlines()
    assert f"ok: Python {python}, TensorFlow {tf}" in line
    [entry] = json.loads(ok(orch("hosts", "list", "--json")).stdout)
    assert entry["status"]["python"] == python and entry["status"]["problem"] == ""

    out = ok(orch("hosts", "remove", "box")).stdout
    assert "removed host box" in out
    assert hosts_json(project_dir) == {"hosts": []}
    assert not (state(project_dir) / "host-status" / "box.json").exists()
    assert "no SSH hosts yet" in ok(orch("hosts", "list")).stdout
    assert json.loads(ok(orch("hosts", "list", "--json")).stdout) == []
    one_line_error(orch("hosts", "remove", "box"), "no SSH host 'box'")


def test_add_replace_changes_the_host(orch: Orch, project_dir: Path, sshd: Sshd,
                                      tmp_path: Path) -> None:
    """`--replace` rewrites a host's entry; the other hosts stay as they were."""
    ok(add(orch, sshd, tmp_path, "box"))
    ok(add(orch, sshd, tmp_path, "zeta"))
    zeta = hosts_json(project_dir)["hosts"][1]
    ok(add(orch, sshd, tmp_path, "box", "--replace", python="/opt/py/bin/python3"))
    hosts = hosts_json(project_dir)["hosts"]
    assert [h["name"] for h in hosts] == ["box", "zeta"]
    assert hosts[0]["python"] == "/opt/py/bin/python3" and hosts[1] == zeta


# ---- refusals: one line each, hosts.json untouched -----------------------------------


@pytest.mark.parametrize("case", ["bad-destination", "bad-port", "no-address", "bad-name",
                                  "duplicate", "missing-key", "public-key"])
def test_bad_add_is_one_line_and_changes_nothing(orch: Orch, project_dir: Path, sshd: Sshd,
                                                 tmp_path: Path, case: str) -> None:
    """Each malformed `orch hosts add` is refused in one line naming what is wrong;
    .orch/hosts.json keeps its bytes."""
    ok(add(orch, sshd, tmp_path))
    before = (state(project_dir) / "hosts.json").read_bytes()
    dest = f"{sshd.user}@127.0.0.1:{sshd.port}"
    key = str(sshd.user_key)
    args, fragments = {
        "bad-destination": (["b2", "root@:99999", "--key", key], ["bad port", "root@:99999"]),
        "bad-port": (["b2", "root@127.0.0.1:0", "--key", key], ["bad port"]),
        "no-address": (["b2", "root@", "--key", key], ["bad host address"]),
        "bad-name": (["Bad/Name", dest, "--key", key], ["bad host name", "bad/name"]),
        "duplicate": (["box", dest, "--key", key], ["'box' exists", "--replace"]),
        "missing-key": (["b2", dest, "--key", str(tmp_path / "absent_key")],
                        ["no such file", "absent_key"]),
        "public-key": (["b2", dest, "--key", str(sshd.user_key_pub)],
                       ["public key", "private"]),
    }[case]
    one_line_error(orch("hosts", "add", *args), *fragments)
    assert (state(project_dir) / "hosts.json").read_bytes() == before


@pytest.mark.parametrize("case", ["auth-refused", "unreachable", "no-python", "no-tensorflow",
                                  "no-disk"])
def test_check_problem_is_one_line(orch: Orch, project_dir: Path, sshd: Sshd,
                                   tmp_path: Path, case: str) -> None:
    """`orch hosts check` of a host that cannot take work: exit non-zero and one line
    saying why (sign-in refused, nothing listening, no Python, no TensorFlow, too little
    disk); what the probe learned is kept in host-status; hosts.json is untouched."""
    env: dict[str, str] = {}
    if case == "auth-refused":
        key = other_key(tmp_path)
        trusted(orch, sshd, tmp_path, key=key)
        fragments = ["refused to sign in", str(key)]
    elif case == "unreachable":
        port = free_port()
        ok(add(orch, sshd, tmp_path, port=port))
        fragments = ["cannot reach host box", f"127.0.0.1:{port}"]
        one_line_error(orch("hosts", "trust", "box", "--fingerprint", sshd.fingerprint),
                       *fragments)
        assert not (state(project_dir) / "known_hosts").exists()
    elif case == "no-python":
        trusted(orch, sshd, tmp_path, python="/nonexistent/python")
        fragments = ["no Python at '/nonexistent/python'", "--python"]
    elif case == "no-tensorflow":
        python = python_without_tf(tmp_path)
        trusted(orch, sshd, tmp_path, python=python)
        fragments = [f"TensorFlow is not installed for {python}"]
    else:
        trusted(orch, sshd, tmp_path)
        env = {"ORCH_HOST_MIN_FREE_MB": "999999999"}
        fragments = ["MB free in", str(tmp_path / "host"), "999999999 MB"]
    before = (state(project_dir) / "hosts.json").read_bytes()
    line = one_line_error(orch("hosts", "check", "box", env=env), "host box", *fragments)
    assert (state(project_dir) / "hosts.json").read_bytes() == before
    if case in ("no-python", "no-tensorflow", "no-disk"):  # found by the probe: kept
        status = host_status(project_dir, "box")
        assert line == f"orch: error: {status['problem']}"
        listed = ok(orch("hosts", "list")).stdout
        assert f"PROBLEM: {status['problem']}" in listed
        if case == "no-tensorflow":
            assert status["tensorflow"] == "" and status["python"] >= "3.11"


# ---- submit --------------------------------------------------------------------------


def test_submit_on_an_unknown_host_names_the_hosts(orch: Orch, project_dir: Path, sshd: Sshd,
                                                   tmp_path: Path) -> None:
    """`--on ssh:NAME` of a host not added is refused in one line naming the hosts
    there are (or none) and how to add it; no job is queued."""
    (project_dir / "x.py").write_text("print(1)\n")
    one_line_error(orch("submit", "x.py", "--on", "ssh:nosuch"), "'nosuch'",
                   "known: none", "orch hosts add nosuch")
    ok(add(orch, sshd, tmp_path, "box"))
    ok(add(orch, sshd, tmp_path, "alpha"))
    one_line_error(orch("submit", "x.py", "--on", "ssh:nosuch"), "'nosuch'",
                   "known: alpha, box", "orch hosts add nosuch")
    assert json.loads(ok(orch("status", "--json")).stdout)["jobs"] == []


@pytest.mark.parametrize("case", ["no-tensorflow", "auth-refused"])
def test_submit_to_a_host_with_a_problem_warns(orch: Orch, project_dir: Path, sshd: Sshd,
                                               tmp_path: Path, case: str) -> None:
    """`orch submit --on ssh:box` after `orch hosts check box` found a problem queues
    the job and warns (stderr) with that problem: one the probe found (no TensorFlow)
    and one met while connecting (sign-in refused)."""
    if case == "no-tensorflow":
        trusted(orch, sshd, tmp_path, python=python_without_tf(tmp_path))
    else:
        trusted(orch, sshd, tmp_path, key=other_key(tmp_path))
    problem = one_line_error(orch("hosts", "check", "box")).removeprefix("orch: error: ")
    (project_dir / "x.py").write_text("print(1)\n")
    try:
        proc = ok(orch("submit", "x.py", "--on", "ssh:box"))
        assert problem in proc.stderr.splitlines(), (
            f"no warning naming {problem!r}:\n{proc.stderr}")
        assert "queued 1 job(s) for ssh:box" in proc.stderr
    finally:
        orch("daemon", "stop")


# ---- secrets -------------------------------------------------------------------------


def test_hosts_json_keeps_the_key_path_never_the_key(orch: Orch, project_dir: Path,
                                                     sshd: Sshd, tmp_path: Path) -> None:
    """.orch/hosts.json (mode 0600) names the private key by its path; neither the
    key's content nor any password is written there or anywhere else under .orch."""
    trusted(orch, sshd, tmp_path)
    ok(orch("hosts", "check", "box"))
    path = state(project_dir) / "hosts.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [entry] = hosts_json(project_dir)["hosts"]
    assert entry["key"] == str(sshd.user_key)
    assert not any("pass" in field.lower() for field in entry), entry
    private = sshd.user_key.read_text()
    body = "".join(line for line in private.splitlines() if "PRIVATE KEY" not in line)
    public_blob = sshd.user_key_pub.read_text().split()[1]
    for file in state(project_dir).rglob("*"):
        if file.is_file():
            data = file.read_bytes().decode("latin-1")
            assert body[:40] not in data and "PRIVATE KEY" not in data, file
            assert public_blob not in data, file  # not even the user's public key


def test_without_the_ssh_extra_the_cli_says_what_to_install(orch: Orch, project_dir: Path,
                                                           sshd: Sshd, tmp_path: Path) -> None:
    """With fabric not importable, `orch hosts check` and `trust` say in one line to
    install orch[ssh] (no traceback)."""
    from tests.conftest import orch_env

    ok(add(orch, sshd, tmp_path))
    blocked = ("import sys; sys.modules['fabric'] = None; sys.modules['paramiko'] = None; "
               "sys.argv = ['orch'] + sys.argv[1:]; from orchestrator.cli import main; main()")
    for args in (["hosts", "check", "box"], ["hosts", "trust", "box", "--fingerprint", "x"]):
        proc = subprocess.run([sys.executable, "-c", blocked, *args], cwd=project_dir,
                              env=orch_env(), capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
        one_line_error(proc, "pip install 'orch[ssh]'")
