"""`orch` commands about learning curves: compare, tensorboard."""

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import OrchError, UsageError
from ..models import ACTIVE, HAS_RESULT
from . import app, err, open_store, project_here


@app.command()
def compare(
    jobs: Annotated[list[str], typer.Argument(
        help="Jobs (id, id prefix or name), or a sweep: the name it was submitted with "
             "(e.g. `train` for train_lr=0.1, train_lr=0.01…), or sweep:JOB for the sweep "
             "JOB belongs to.")],
    metric: Annotated[Optional[str], typer.Option(
        help="The metric to plot (default: val_loss if the runs have it, else loss).")]
    = None,
    png: Annotated[Optional[Path], typer.Option(
        help="Also save the plot as a PNG picture here (needs matplotlib).")] = None,
) -> None:
    """Compare learning curves: best and final value of each metric per job, side by
    side, and the curves of one metric drawn in the terminal's width.

    Best is the minimum for losses and errors, the maximum for accuracy-like
    metrics (the table says which). Finished jobs are read from the history
    pulled beside the model (models/NAME/logs/history.jsonl), running ones
    from the metrics their worker has sent. A job with no curve is named on
    stderr; with no curve at all the exit code is 1.
    """
    from ..curveplot import plot, save_png, table
    from ..curves import curve_of, default_metric, select

    if png is not None and png.is_dir():
        raise UsageError(f"cannot write --png {png}: it is a folder; name a file, e.g. "
                         f"{png / 'curves.png'}")
    if png is not None and not png.resolve().parent.is_dir():
        raise UsageError(f"cannot write --png {png}: folder {png.resolve().parent} does not "
                         "exist")
    project = project_here()
    with open_store(project) as store:
        chosen = select(store, jobs)
        curves, missing = [], []
        for job in chosen:
            curve = curve_of(project, job)
            if curve is None or not curve.rows:
                missing.append(job)
            else:
                curves.append(curve)
    for job in missing:
        state = job.state.value.lower()
        why = (f"no curve yet ({state})" if job.state in ACTIVE else
               f"no learning curve ({state}; its run kept no history: use orch's callbacks "
               "or --auto-track)" if job.state in HAS_RESULT else
               f"no learning curve ({state}; no epoch was recorded)")
        err(f"{job.name} ({job.id}): {why}")
    if not curves:
        raise OrchError("nothing to compare: no learning curve for "
                        + ", ".join(j.name for j in missing))
    have = sorted({m for c in curves for m in c.metrics()})
    if metric is not None and metric not in have:
        raise UsageError(f"unknown metric {metric!r}: the runs have {', '.join(have)}")
    shown = metric or default_metric(curves)
    metrics = list(dict.fromkeys(m for c in curves for m in c.metrics()))
    width = shutil.get_terminal_size((100, 24)).columns
    print(table(curves, metrics, width))
    print()
    print(plot(curves, shown, width))
    for curve in curves:
        if not curve.source.endswith("history.jsonl"):
            err(f"{curve.label}: {curve.job.state.value.lower()}, its curve so far (from "
                f"{curve.source})")
    if png is not None:
        save_png(curves, shown, png)
        err(f"saved the curves of {shown} in {png}")


@app.command()
def tensorboard(
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 6006,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every "
                                           "interface).")] = "127.0.0.1",
) -> None:
    """Serve every pulled run of the project with TensorBoard, each run named after its
    job (models/NAME/logs). Runs until Ctrl-C.

    Needs the tensorboard package: pip install tensorboard (it is in orch's
    tf extra).
    """
    import importlib.util

    from ..curves import tensorboard_runs

    if not 0 < port < 65536:
        raise UsageError(f"bad --port {port}: 1 to 65535")
    if importlib.util.find_spec("tensorboard") is None:
        raise OrchError("tensorboard is not installed: pip install 'orch[tf]' (or pip "
                        "install tensorboard)")
    project = project_here()
    with open_store(project) as store:
        runs = tensorboard_runs(project, store)
    if not runs:
        raise OrchError("no learning curves in this project yet: jobs that use orch's "
                        "callbacks (or --auto-track) bring them back in models/NAME/logs/")
    spec = ",".join(f"{name}:{path}" for name, path in runs.items())
    err(f"serving {len(runs)} run(s) at http://{host}:{port}/ (Ctrl-C to stop): "
        + ", ".join(runs))
    sys.stderr.flush()
    argv = [sys.executable, "-m", "tensorboard.main", "--logdir_spec", spec,
            "--port", str(port), "--host", host, "--load_fast", "false"]
    env: dict[str, Any] = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    os.execve(sys.executable, argv, env)  # Ctrl-C and signals go to TensorBoard itself
