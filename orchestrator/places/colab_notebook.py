"""Colab notebooks, generated with nbformat (v4) from the cells of
:mod:`.colab_cells`, and the wheel of the running orch that they install.

Two notebooks:

- the **worker notebook** runs every job sent to Colab until it has been idle for
  a while: one click, any number of jobs;
- the **per-job notebook** is the same worker told to run one job and stop.

``colab_runners/worker.ipynb`` and ``colab_runners/job.ipynb`` in the repository are
these notebooks rendered with placeholder settings (a test keeps them equal to
what this module renders; ``python -m orchestrator.places.colab_notebook DIR``
writes them). ``orch colab`` renders them with the project's settings instead.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import inspect
import io
import sys
import textwrap
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from . import colab_cells

FIXED_TIME = (2020, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class NotebookSettings:
    """The first cell of a notebook: where the hub is, which orch to install, how
    the worker runs. The defaults are the placeholders of ``colab_runners/``."""

    hub_folder: str = "orch-hub/YOUR-PROJECT"
    hub_key: str = ""  # empty: the Colab secret ORCH_HUB_KEY (the key never enters a hub)
    wheel_name: str = f"orch-{__version__}-py3-none-any.whl"
    wheel_sha: str = ""
    job: str | None = None
    idle_minutes: float = 30.0
    session_hours: float = 12.0
    work_dir: str = "/content/orch-work"
    worker_name: str = "colab"
    heartbeat_seconds: float = 5.0
    shared_drive: str = ""  # a Shared Drive's id (drive_shared_drive); empty: My Drive
    # empty: Colab asks for Drive access; `orch colab --launch` fills it in the copy it
    # sends to the runtime (never in a hub): the colab CLI cannot show that dialog
    drive_credentials: str = ""

    def cell(self) -> str:
        lines = ["# orch settings, written by `orch colab` (`orch colab --settings` prints them)",
                 "# HUB_KEY: leave it empty; the notebook reads the Colab secret ORCH_HUB_KEY",
                 "# DRIVE_CREDENTIALS: leave it empty; Colab asks you for Drive access"]
        lines += [f"{f.name.upper()} = {getattr(self, f.name)!r}"
                  for f in dataclasses.fields(self)]
        return "\n".join(lines)

    def __repr__(self) -> str:  # never shows the key
        return f"NotebookSettings(hub_folder={self.hub_folder!r}, job={self.job!r})"


def _cell(fn: Callable[..., Any], call: str) -> str:
    """A code cell: the function's own source, then the line that calls it (and the
    import its annotations need: a notebook evaluates them)."""
    source = textwrap.dedent(inspect.getsource(fn)).rstrip()
    header = "from typing import Any\n\n\n" if "Any" in source else ""
    return header + source + "\n\n\n" + call


CALLS: tuple[tuple[Callable[..., Any], str], ...] = (
    (colab_cells.sign_in, "CREDS = sign_in(DRIVE_CREDENTIALS)"),
    (colab_cells.show_gpu, "GPU_NAME = show_gpu()"),
    (colab_cells.install_orch,
     "install_orch(CREDS, HUB_FOLDER, SHARED_DRIVE, WHEEL_NAME, WHEEL_SHA, WORK_DIR)"),
    (colab_cells.run_worker,
     "run_worker(CREDS, HUB_FOLDER, SHARED_DRIVE, HUB_KEY, GPU_NAME, JOB, IDLE_MINUTES,\n"
     "           SESSION_HOURS, WORK_DIR, WORKER_NAME, HEARTBEAT_SECONDS)"),
)


def notebook(settings: NotebookSettings) -> Any:
    """The worker notebook (or, with ``settings.job``, the per-job notebook)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    what = (f"runs job `{settings.job}`, then stops" if settings.job else
            "runs every job sent to Colab until it has been idle for "
            f"{settings.idle_minutes:g} minutes")
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            f"# orch worker\n\nThis notebook {what}, for the orch project whose hub is the "
            f"Drive folder `{settings.hub_folder}`. Choose *Runtime → Change runtime type → "
            "GPU*, then *Runtime → Run all*. Models come back to the project by themselves; "
            "if the runtime disconnects, the job resumes from its last checkpoint on the "
            "next run."),
        nbformat.v4.new_code_cell(settings.cell()),
        *(nbformat.v4.new_code_cell(_cell(fn, call)) for fn, call in CALLS),
    ]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"orch-{i}"  # stable ids: the same settings render the same bytes
    nb.metadata.update({
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
        "colab": {"provenance": [], "gpuType": "T4"},
    })
    nbformat.validate(nb)
    return nb


def render(settings: NotebookSettings) -> str:
    import nbformat

    return str(nbformat.writes(notebook(settings)))


def committed() -> dict[str, str]:
    """The notebooks of ``colab_runners/``, by file name, as this orch renders them."""
    return {"worker.ipynb": render(NotebookSettings()),
            "job.ipynb": render(NotebookSettings(job="JOB-ID"))}


def build_wheel() -> tuple[str, bytes]:
    """A wheel of the running orch package: ``(file name, bytes)``, byte-identical
    for identical code (fixed times, sorted entries), so its blob is stored once."""
    package = Path(__file__).resolve().parent.parent
    name = f"orch-{__version__}-py3-none-any.whl"
    dist = f"orch-{__version__}.dist-info"
    files: list[tuple[str, bytes]] = []
    for path in sorted(package.rglob("*.py")):
        files.append((f"orchestrator/{path.relative_to(package).as_posix()}", path.read_bytes()))
    files += [
        (f"{dist}/METADATA", (f"Metadata-Version: 2.1\nName: orch\nVersion: {__version__}\n"
                              "Summary: Hybrid local/Colab training orchestrator\n").encode()),
        (f"{dist}/WHEEL", b"Wheel-Version: 1.0\nGenerator: orch\nRoot-Is-Purelib: true\n"
                          b"Tag: py3-none-any\n"),
        (f"{dist}/entry_points.txt", b"[console_scripts]\norch = orchestrator.entry:main\n"),
    ]
    record = [f"{n},sha256={_b64sha(d)},{len(d)}" for n, d in files] + [f"{dist}/RECORD,,"]
    files.append((f"{dist}/RECORD", ("\n".join(record) + "\n").encode()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in files:
            info = zipfile.ZipInfo(arcname, FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return name, out.getvalue()


def _b64sha(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def main(argv: list[str] | None = None) -> int:
    """``python -m orchestrator.places.colab_notebook DIR``: write the committed notebooks."""
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "colab_runners")
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in committed().items():
        (folder / name).write_text(text, encoding="utf-8")
        print(folder / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
