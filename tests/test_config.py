"""Project discovery and settings (orchestrator.config): files, env overrides,
validation."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest

from orchestrator.config import (
    MARKERS,
    Project,
    Settings,
    find_root,
    load_settings,
    open_project,
)
from orchestrator.errors import ProjectError, UsageError


@pytest.fixture(autouse=True)
def _no_orch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read os.environ by default: keep the caller's ORCH_* out."""
    for key in list(os.environ):
        if key.startswith("ORCH_"):
            monkeypatch.delenv(key)


def no_marker_above(path: Path) -> bool:
    return not any((p / m).exists() for p in path.resolve().parents for m in MARKERS)


# ---- finding the project -----------------------------------------------------------


@pytest.mark.parametrize("marker", ["pyproject.toml", "orch.toml", ".orch"])
def test_find_root_walks_upward(tmp_path: Path, marker: str) -> None:
    root = tmp_path / "proj"
    deep = root / "a" / "b" / "c"
    deep.mkdir(parents=True)
    if marker == ".orch":
        (root / marker).mkdir()
    else:
        (root / marker).write_text("")
    assert find_root(deep) == root.resolve()
    assert find_root(root) == root.resolve()


def test_find_root_takes_the_nearest(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    inner = outer / "sub" / "inner"
    (inner / "x").mkdir(parents=True)
    (outer / "orch.toml").write_text("")
    (inner / "pyproject.toml").write_text("")
    assert find_root(inner / "x") == inner.resolve()
    assert find_root(outer / "sub") == outer.resolve()


def test_find_root_none_without_markers(tmp_path: Path) -> None:
    here = tmp_path / "nothing" / "here"
    here.mkdir(parents=True)
    if not no_marker_above(here):
        pytest.skip("a folder above tmp_path holds a project marker")
    assert find_root(here) is None


def test_find_root_defaults_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "orch.toml").write_text("")
    (tmp_path / "deep").mkdir()
    monkeypatch.chdir(tmp_path / "deep")
    assert find_root() == tmp_path.resolve()


# ---- settings from files -------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    assert load_settings(tmp_path, environ={}) == Settings()


def test_pyproject_tool_orch(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.other]\nlease_ttl = 1\n\n'
        '[tool.orch]\nlease_ttl = 7\nlocal_slots = 2\nauto_pull = false\n'
        'outputs_dir = "out"\ngpus = "none"\n'
    )
    s = load_settings(tmp_path, environ={})
    assert (s.lease_ttl, s.local_slots, s.auto_pull, s.outputs_dir, s.gpus) == (
        7.0, 2, False, "out", "none")
    assert s.tick_interval == Settings().tick_interval


def test_pyproject_without_tool_orch_gives_defaults(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.ruff]\nline-length = 9\n')
    assert load_settings(tmp_path, environ={}) == Settings()


def test_orch_toml_top_level(tmp_path: Path) -> None:
    (tmp_path / "orch.toml").write_text('heartbeat_interval = 0.5\nhub = "/tmp/hub"\n')
    s = load_settings(tmp_path, environ={})
    assert (s.heartbeat_interval, s.hub) == (0.5, "/tmp/hub")


def test_orch_toml_orch_table(tmp_path: Path) -> None:
    (tmp_path / "orch.toml").write_text("[orch]\nlease_ttl = 9\nmax-snapshot-mb = 50\n")
    s = load_settings(tmp_path, environ={})
    assert (s.lease_ttl, s.max_snapshot_mb) == (9.0, 50.0)


def test_orch_toml_wins_over_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.orch]\nlease_ttl = 7\nlocal_slots = 3\n")
    (tmp_path / "orch.toml").write_text("lease_ttl = 11\n")
    s = load_settings(tmp_path, environ={})
    assert (s.lease_ttl, s.local_slots) == (11.0, 3)


def test_env_overrides_win(tmp_path: Path) -> None:
    (tmp_path / "orch.toml").write_text("lease_ttl = 11\nauto_pull = true\nlocal_slots = 2\n")
    env = {"ORCH_LEASE_TTL": "90s", "ORCH_AUTO_PULL": "no", "ORCH_LOCAL_SLOTS": "0",
           "ORCH_OUTPUTS_DIR": "trained", "ORCH_UNRELATED": "whatever", "LEASE_TTL": "1"}
    s = load_settings(tmp_path, environ=env)
    assert (s.lease_ttl, s.auto_pull, s.local_slots, s.outputs_dir) == (90.0, False, 0, "trained")


def test_env_read_from_os_environ_by_default(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_TICK_INTERVAL", "2m")
    assert load_settings(tmp_path).tick_interval == 120.0


@pytest.mark.parametrize(("text", "seconds"), [
    ('"40s"', 40.0), ('"1m"', 60.0), ('"1h30m"', 5400.0), ('"2.5"', 2.5), ("3", 3.0),
    ("0.25", 0.25),
])
def test_durations_accepted_for_float_settings(tmp_path: Path, text: str, seconds: float) -> None:
    (tmp_path / "orch.toml").write_text(f"lease_ttl = {text}\ndaemon_idle_timeout = {text}\n")
    s = load_settings(tmp_path, environ={})
    assert s.lease_ttl == pytest.approx(seconds)
    assert s.daemon_idle_timeout == pytest.approx(seconds)
    assert load_settings(tmp_path, environ={"ORCH_LEASE_TTL": "5m"}).lease_ttl == 300.0


@pytest.mark.parametrize(("text", "value"), [
    ("true", True), ("false", False), ('"yes"', True), ('"off"', False), ('"1"', True),
    ('"0"', False), ('"TRUE"', True),
])
def test_bool_settings(tmp_path: Path, text: str, value: bool) -> None:
    (tmp_path / "orch.toml").write_text(f"auto_pull = {text}\n")
    assert load_settings(tmp_path, environ={}).auto_pull is value


@pytest.mark.parametrize("text", ['"auto"', '""'])
def test_local_slots_auto(tmp_path: Path, text: str) -> None:
    (tmp_path / "orch.toml").write_text(f"local_slots = {text}\n")
    assert load_settings(tmp_path, environ={}).local_slots is None


# ---- bad settings --------------------------------------------------------------------


@pytest.mark.parametrize("where", ["orch.toml", "orch_table", "pyproject.toml"])
def test_unknown_key_is_a_usage_error(tmp_path: Path, where: str) -> None:
    if where == "pyproject.toml":
        (tmp_path / "pyproject.toml").write_text("[tool.orch]\nlease_tll = 3\n")
    elif where == "orch_table":
        (tmp_path / "orch.toml").write_text("[orch]\nlease_tll = 3\n")
    else:
        (tmp_path / "orch.toml").write_text("lease_tll = 3\n")
    with pytest.raises(UsageError) as info:
        load_settings(tmp_path, environ={})
    assert "lease_tll" in str(info.value)
    assert "lease_ttl" in str(info.value)  # the known names are listed


@pytest.mark.parametrize(("key", "text"), [
    ("lease_ttl", '"soon"'), ("lease_ttl", '"10q"'), ("lease_ttl", '"-5"'),
    ("local_slots", '"many"'), ("local_slots", '"1.5"'),
    ("auto_pull", '"maybe"'), ("auto_pull", '"2"'),
    ("heartbeat_interval", '"fast"'),
])
def test_bad_value_is_a_usage_error(tmp_path: Path, key: str, text: str) -> None:
    (tmp_path / "orch.toml").write_text(f"{key} = {text}\n")
    with pytest.raises(UsageError) as info:
        load_settings(tmp_path, environ={})
    assert key in str(info.value)


@pytest.mark.parametrize(("var", "value"), [
    ("ORCH_LEASE_TTL", "forever"), ("ORCH_LOCAL_SLOTS", "two"), ("ORCH_AUTO_PULL", "perhaps"),
])
def test_bad_env_value_is_a_usage_error(tmp_path: Path, var: str, value: str) -> None:
    with pytest.raises(UsageError) as info:
        load_settings(tmp_path, environ={var: value})
    assert var.removeprefix("ORCH_").lower() in str(info.value)


def test_malformed_toml_is_a_project_error(tmp_path: Path) -> None:
    (tmp_path / "orch.toml").write_text("lease_ttl = = 3\n[unclosed\n")
    with pytest.raises(ProjectError) as info:
        load_settings(tmp_path, environ={})
    assert "orch.toml" in str(info.value)


def test_every_setting_can_come_from_the_environment(tmp_path: Path) -> None:
    samples = {"int | None": "4", "str": "val", "float": "12"}
    env = {f"ORCH_{f.name.upper()}": samples.get(str(f.type)) or str(not f.default).lower()
           for f in dataclasses.fields(Settings)}  # a bool: the opposite of its default
    s = load_settings(tmp_path, environ=env)
    for f in dataclasses.fields(Settings):
        assert getattr(s, f.name) != getattr(Settings(), f.name), f.name


# ---- opening a project -------------------------------------------------------------


def test_open_project_without_state_dir_is_a_project_error(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "orch.toml").write_text("")
    with pytest.raises(ProjectError) as info:
        open_project(root, create=False)
    assert "orch init" in str(info.value)
    assert not (root / ".orch").exists()


def test_open_project_with_no_marker_at_all(tmp_path: Path) -> None:
    here = tmp_path / "bare"
    here.mkdir()
    if not no_marker_above(here):
        pytest.skip("a folder above tmp_path holds a project marker")
    with pytest.raises(ProjectError):
        open_project(here, create=False)
    assert not (here / ".orch").exists()


def test_open_project_create_makes_state_dirs(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "orch.toml").write_text("lease_ttl = 5\n")
    project = open_project(root / ".", create=True)
    assert project.root == root.resolve()
    assert project.settings.lease_ttl == 5.0
    for folder in (project.state_dir, project.hub_dir, project.logs_dir, project.work_dir):
        assert folder.is_dir()
    assert (project.state_dir / ".gitignore").read_text() == "*\n"
    assert project.db_path == root.resolve() / ".orch" / "state.db"
    # and afterwards it opens without create, from a subfolder too
    (root / "src").mkdir()
    again = open_project(root / "src", create=False)
    assert again.root == project.root


def test_a_bare_folder_never_silently_becomes_a_project(tmp_path: Path) -> None:
    here = tmp_path / "bare"
    here.mkdir()
    if not no_marker_above(here):
        pytest.skip("a folder above tmp_path holds a project marker")
    with pytest.raises(ProjectError, match="orch init"):
        open_project(here, create=True)
    assert not (here / ".orch").exists()


def test_the_state_folder_is_private(tmp_path: Path) -> None:
    project = Project(tmp_path, Settings())
    project.init()
    assert stat.S_IMODE(project.state_dir.stat().st_mode) == 0o700
    os.chmod(project.state_dir, 0o755)  # made by an older orch
    project.init()
    assert stat.S_IMODE(project.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((project.state_dir / "project.json").stat().st_mode) == 0o600


def test_project_init_is_idempotent(tmp_path: Path) -> None:
    project = Project(tmp_path, Settings())
    assert project.init() is True
    (project.state_dir / ".gitignore").write_text("custom\n")
    assert project.init() is False
    assert (project.state_dir / ".gitignore").read_text() == "custom\n"


def test_project_paths(tmp_path: Path) -> None:
    p = Project(tmp_path, Settings(outputs_dir="trained", hub=""))
    assert p.outputs_dir == tmp_path / "trained"
    assert p.hub_url == str(tmp_path / ".orch" / "hub")
    # `hub` names the project's remote hub; local workers keep the folder hub
    remote = Project(tmp_path, Settings(hub="drive:orch-hub/p"))
    assert remote.hub_url == str(tmp_path / ".orch" / "hub")
    assert remote.drive_credentials == tmp_path / ".orch" / "drive-credentials.json"
    assert remote.remote_hub_url == "drive:orch-hub/p"
    default = Project(tmp_path, Settings(hub="drive"))
    assert default.remote_hub_url == f"drive:orch-hub/{tmp_path.name}"


def test_settings_cache_follows_edits_of_the_config_file(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / ".orch").mkdir(parents=True)
    toml = root / "orch.toml"
    toml.write_text("local_slots = 2\n")
    assert load_settings(root, environ={}).local_slots == 2
    assert (root / ".orch" / "settings-cache.json").is_file()
    assert load_settings(root, environ={}).local_slots == 2  # served from the cache
    toml.write_text("local_slots = 3\n")  # same size: only the mtime tells
    os.utime(toml, ns=(toml.stat().st_atime_ns, toml.stat().st_mtime_ns + 1_000_000))
    assert load_settings(root, environ={}).local_slots == 3
    toml.write_text("local_slots = 3\nbogus = 1\n")
    with pytest.raises(UsageError):
        load_settings(root, environ={})


# ---- `orch config`: effective values and where they came from (real CLI) ---------------


def config_table(root: Path, env: dict[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """`orch config` as {setting: (value as shown, source)}."""
    from .conftest import run_orch

    out = run_orch(root, "config", env=env, check=True).stdout.splitlines()
    header = next(i for i, line in enumerate(out) if line.startswith("setting "))
    value_at, from_at = out[header].index("value"), out[header].index("from")
    return {line[:value_at].strip(): (line[value_at:from_at].strip(), line[from_at:].strip())
            for line in out[header + 1:]}


def test_config_shows_values_and_their_sources(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.orch]\nauto_pull = false\nlease_ttl = 3\noutputs_dir = "out"\n')
    (tmp_path / "orch.toml").write_text('lease_ttl = "45s"\nhub = "drive"\n')
    table = config_table(tmp_path, env={"ORCH_TICK_INTERVAL": "0.2"})
    assert set(table) == {f.name for f in dataclasses.fields(Settings)}
    assert table["lease_ttl"] == ("45s", "orch.toml")  # orch.toml wins over pyproject
    assert table["auto_pull"] == ("false", "pyproject.toml")
    assert table["outputs_dir"] == ("out", "pyproject.toml")
    assert table["hub"] == (f"drive (drive:orch-hub/{tmp_path.name})", "orch.toml")
    assert table["tick_interval"] == ("0.2s", "env ORCH_TICK_INTERVAL")
    assert table["daemon_idle_timeout"] == ("5m", "default")
    assert table["remote_lease_ttl"] == ("5m", "default")
    assert table["unreachable_lease_ttl"] == ("1h", "default")
    assert table["drive_credentials"] == (".orch/drive-credentials.json", "default")
    assert table["drive_shared_drive"] == ("(none)", "default")
    assert table["colab_workers"] == ("(none)", "default")
    assert table["gpu_jobs"] == ("4", "default")
    assert table["upload_rate"] == ("5 MB/s", "default")
    assert table["gpus"][0].startswith("auto (detected: ")
    assert table["local_slots"][0].startswith("auto: ")
    for value, _ in table.values():  # no Python reprs
        assert value not in ("None", "''", "") and not value.startswith("'"), table


def test_config_json_keeps_machine_values_with_sources(tmp_path: Path) -> None:
    from .conftest import run_orch

    (tmp_path / "orch.toml").write_text('lease_ttl = "2m"\ngpus = "none"\n')
    out = run_orch(tmp_path, "config", "--json", env={"ORCH_LOCAL_SLOTS": "2"},
                   check=True).stdout
    doc = json.loads(out)
    assert doc["project"] == str(tmp_path.resolve())
    settings = doc["settings"]
    assert settings["lease_ttl"] == {"value": 120.0, "source": "orch.toml"}
    assert settings["gpus"] == {"value": "none", "source": "orch.toml"}
    assert settings["local_slots"] == {"value": 2, "source": "env ORCH_LOCAL_SLOTS"}
    assert settings["gpu_jobs"] == {"value": None, "source": "default"}
    assert settings["hub"] == {"value": "", "source": "default"}


@pytest.mark.parametrize(("file", "text", "env", "names"), [
    ("orch.toml", 'lease_ttl = "soon"\n', {}, ("orch.toml", "lease_ttl", "'soon'", "30s")),
    ("pyproject.toml", "[tool.orch]\nauto_pull = 2\n", {},
     ("pyproject.toml", "auto_pull", "true or false")),
    ("orch.toml", "", {"ORCH_LOCAL_SLOTS": "two"},
     ("$ORCH_LOCAL_SLOTS", "local_slots", "'two'", "auto")),
])
def test_a_bad_value_is_one_clear_line(tmp_path: Path, file: str, text: str,
                                       env: dict[str, str], names: tuple[str, ...]) -> None:
    from .conftest import run_orch

    (tmp_path / file).write_text(text)
    proc = run_orch(tmp_path, "config", env=env)
    assert proc.returncode != 0 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orch: error: "), proc.stderr
    for name in names:
        assert name in lines[0]
