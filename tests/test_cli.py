"""The CLI in-process, with typer's CliRunner: each command parses, calls its service
and prints. (Subprocess tests elsewhere cover start-up, exit codes and one-line
errors through the real console entry point.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from orchestrator.cli import app
from orchestrator.errors import JobNotFoundError, NotConfiguredError

#: no local workers: submitted jobs stay queued while the test looks at them
QUIET = {"ORCH_LOCAL_SLOTS": "0", "ORCH_GPUS": "none"}

Invoke = Callable[..., Result]


@pytest.fixture
def invoke(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    monkeypatch.chdir(project_dir)
    runner = CliRunner()

    def call(*args: str, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(app, list(args), env={**QUIET, **(env or {})})

    return call


def submit(invoke: Invoke, project_dir: Path, *args: str) -> str:
    (project_dir / "train.py").write_text("print('training')\n")
    result = invoke("submit", "train.py", *args)
    assert result.exit_code == 0, result.output
    return result.stdout.split()[0]


def test_status_of_an_empty_project(invoke: Invoke) -> None:
    assert invoke("init").exit_code == 0
    result = invoke("status")
    assert result.exit_code == 0 and "no jobs yet" in result.stdout


def test_submit_then_status_cancel_retry(invoke: Invoke, project_dir: Path) -> None:
    job_id = submit(invoke, project_dir, "--name", "first", "--priority", "3")
    table = invoke("status").stdout
    assert job_id in table and "first" in table and "QUEUED" in table
    doc = json.loads(invoke("status", "first", "--json").stdout)
    assert (doc["id"], doc["state"], doc["attempt"]) == (job_id, "QUEUED", 1)
    assert doc["events"][0]["dst"] == "QUEUED"
    assert invoke("cancel", job_id[:4]).stdout.strip() == f"{job_id} first: cancelled"
    retried = invoke("retry", "first")
    assert retried.stdout.strip() == (f"{job_id} first: queued as attempt 2 (resuming "
                                      "from its newest checkpoint)")
    detail = invoke("status", job_id).stdout
    assert "retried by user" in detail and "cancelled by user" in detail


def test_logs_and_pull_with_nothing_there(invoke: Invoke, project_dir: Path) -> None:
    job_id = submit(invoke, project_dir)
    logs = invoke("logs", job_id)
    assert logs.exit_code == 0 and "no log yet" in logs.stderr
    assert isinstance(invoke("logs", job_id, "--attempt", "3").exception, Exception)
    assert invoke("pull").stdout.strip() == "nothing to pull"


def test_unknown_job_is_an_orch_error(invoke: Invoke) -> None:
    invoke("init")
    assert isinstance(invoke("status", "nope").exception, JobNotFoundError)


def test_config_daemon_status_and_worker_help(invoke: Invoke) -> None:
    invoke("init")
    config = invoke("config").stdout
    assert "lease_ttl" in config and "local_slots" in config
    assert "daemon: not running" in invoke("daemon", "status").stdout
    # `orch worker` hands its arguments to the worker's own parser
    assert "--burst" in invoke("worker", "--help").stdout


def test_colab_settings_need_a_drive_hub_then_print_the_cell(invoke: Invoke,
                                                             project_dir: Path) -> None:
    invoke("init")
    assert isinstance(invoke("colab", "--settings").exception, NotConfiguredError)
    result = invoke("colab", "--settings", env={"ORCH_HUB": "drive"})
    assert result.exit_code == 0, result.output
    assert f"HUB_FOLDER = 'orch-hub/{project_dir.name}'" in result.stdout
    assert "WHEEL_SHA = '" in result.stdout and "WHEEL_SHA = ''" not in result.stdout
