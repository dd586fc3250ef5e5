"""Extra packages a job declares (`orch submit --pip`, `--requirements`): installed by a
real worker for a real job that imports them, cached per worker, with no network (pip
finds a wheel built here, through PIP_NO_INDEX / PIP_FIND_LINKS); and the TensorFlow
version the job ran with, shown by `orch status JOB`."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import zipfile
from pathlib import Path

from orchestrator.models import JobState as S

from .conftest import read_job, run_orch, wait_for

ENDED = (S.SUCCEEDED, S.PULLED, S.FAILED, S.CANCELLED)

SCRIPT = """\
import os, pathlib, orchtiny
print("orchtiny says", orchtiny.hello(), "from", orchtiny.__file__)
(pathlib.Path(os.environ["ORCH_OUTPUT_DIR"]) / "model.bin").write_text(orchtiny.hello())
"""


def build_wheel(folder: Path, name: str = "orchtiny", version: str = "0.1",
                requires: str = "") -> Path:
    """A real (pure-Python) wheel of package ``name`` (needing ``requires``), written
    by hand: no build backend, no network."""
    files = {
        f"{name}/__init__.py": f"def hello():\n    return '{name} {version}'\n",
        f"{name}-{version}.dist-info/METADATA":
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + (f"Requires-Dist: {requires}\n" if requires else ""),
        f"{name}-{version}.dist-info/WHEEL":
            "Wheel-Version: 1.0\nGenerator: orch-tests\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest())
        record.append(f"{path},sha256={digest.decode().rstrip('=')},{len(text.encode())}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
        z.writestr(f"{name}-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


def submit(project_dir: Path, env: dict[str, str], *args: str) -> str:
    proc = run_orch(project_dir, "submit", "--on", "local", *args, "use.py", env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()[0]


def ended(project_dir: Path, job_id: str) -> object:
    wait_for(lambda: read_job(project_dir, job_id).state in ENDED, timeout=180,
             message=f"job {job_id} to end")
    return read_job(project_dir, job_id)


def test_pip_packages_installed_once_per_worker_and_tf_version_shown(
        project_dir: Path, tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    build_wheel(wheelhouse)
    build_wheel(project_dir / "wheels", version="0.2")
    (project_dir / "use.py").write_text(SCRIPT)
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)}

    first = ended(project_dir, submit(project_dir, env, "--pip", "orchtiny==0.1"))
    assert first.state in (S.SUCCEEDED, S.PULLED), first.error
    log1 = run_orch(project_dir, "logs", first.id, env=env, check=True).stdout
    assert "installing packages" in log1 and "orchtiny says orchtiny 0.1" in log1
    assert "using cached packages" not in log1

    second = ended(project_dir, submit(project_dir, env, "--pip", "orchtiny==0.1"))
    assert second.state in (S.SUCCEEDED, S.PULLED), second.error
    assert second.worker_id == first.worker_id  # the same worker: its cache
    log2 = run_orch(project_dir, "logs", second.id, env=env, check=True).stdout
    assert "using cached packages" in log2 and "installing packages" not in log2
    assert "orchtiny says orchtiny 0.1" in log2

    # a wheel in the project ships in the snapshot; another set: installed anew
    third = ended(project_dir, submit(project_dir, env, "--pip",
                                      "wheels/orchtiny-0.2-py3-none-any.whl"))
    assert third.state in (S.SUCCEEDED, S.PULLED), third.error
    log3 = run_orch(project_dir, "logs", third.id, env=env, check=True).stdout
    assert "installing packages" in log3 and "orchtiny says orchtiny 0.2" in log3

    status = run_orch(project_dir, "status", first.id, env=env, check=True).stdout
    dists = {d.metadata["Name"].replace("_", "-"): d.version
             for d in importlib.metadata.distributions()}
    tf = dists.get("tensorflow") or dists["tensorflow-cpu"]
    assert f"trained with TensorFlow {tf}" in status
    assert "packages  orchtiny==0.1" in status


def test_requirements_file_and_a_failed_install(project_dir: Path, tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    build_wheel(wheelhouse)
    (project_dir / "use.py").write_text(SCRIPT)
    (project_dir / "needs.txt").write_text("# what use.py needs\norchtiny==0.1\n")
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)}

    good = ended(project_dir, submit(project_dir, env, "--requirements", "needs.txt"))
    assert good.state in (S.SUCCEEDED, S.PULLED), good.error
    assert "orchtiny says orchtiny 0.1" in run_orch(project_dir, "logs", good.id, env=env,
                                                    check=True).stdout

    bad = ended(project_dir, submit(project_dir, env, "--pip", "nosuchpkg-orch==9.9"))
    assert bad.state is S.FAILED
    assert bad.error.startswith("could not set up the run: pip could not install the job's "
                                "packages (nosuchpkg-orch==9.9; exit 1)")
    assert "No matching distribution found for nosuchpkg-orch==9.9" in bad.error
    assert "\n" not in bad.error


def test_dependencies_this_python_has_are_not_shadowed(project_dir: Path,
                                                        tmp_path: Path) -> None:
    """pip --target installs a dependency again even when the worker's Python has it;
    orch keeps the environment's own copy (as Colab's TensorFlow and NumPy)."""
    wheelhouse = tmp_path / "wheelhouse"
    build_wheel(wheelhouse, version="0.3", requires="orchdep")
    dep = build_wheel(wheelhouse, name="orchdep", version="1.0")
    base = tmp_path / "base-site"  # orchdep, already in the worker's environment
    with zipfile.ZipFile(dep) as z:
        z.extractall(base)
    (project_dir / "use.py").write_text(SCRIPT + "import orchdep\nprint('orchdep from', "
                                        "orchdep.__file__)\n")
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse),
           "PYTHONPATH": f"{Path(__file__).resolve().parents[1]}:{base}"}
    job = ended(project_dir, submit(project_dir, env, "--pip", "orchtiny==0.3"))
    assert job.state in (S.SUCCEEDED, S.PULLED), job.error
    log = run_orch(project_dir, "logs", job.id, env=env, check=True).stdout
    assert "kept this Python's own orchdep" in log
    assert "orchtiny says orchtiny 0.3" in log
    assert f"orchdep from {base / 'orchdep' / '__init__.py'}" in log


def test_bad_package_declarations_are_refused_at_submit(project_dir: Path,
                                                        tmp_path: Path) -> None:
    (project_dir / "use.py").write_text(SCRIPT)
    outside = build_wheel(tmp_path / "elsewhere")
    for args, message in [
        (("--pip", "not a requirement!"), "bad --pip 'not a requirement!'"),
        (("--pip", "--index-url=http://x"), "pip options go in a --requirements file"),
        (("--pip", str(outside)), "is outside the project"),
        (("--pip", "wheels/missing-1.0-py3-none-any.whl"), "no such file"),
        (("--requirements", "nope.txt"), "--requirements nope.txt: no such file"),
        (("--env", "ORCH_REQUIREMENTS=[]"), "declare packages with --pip"),
    ]:
        proc = run_orch(project_dir, "submit", "--on", "local", *args, "use.py")
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not (project_dir / ".orch" / "state.db").exists() or \
        run_orch(project_dir, "status", "--json", check=True).stdout.count('"id"') == 0
