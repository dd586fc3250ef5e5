"""`orch pull`: bring sealed results back, and `--verify` the models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import PullError
from . import app, err, open_store, project_here


@app.command()
def pull(
    jobs: Annotated[Optional[list[str]], typer.Argument(
        help="Jobs to pull (default: every finished job not pulled yet).")] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="Also re-pull already pulled jobs.")]
    = False,
    to: Annotated[Optional[Path], typer.Option(help="Put outputs in DIR instead of their "
                                                    "destinations.")] = None,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Load each model with TensorFlow and run one prediction: the "
                         "named jobs' models, or with no names every pulled model not "
                         "verified yet.")] = False,
) -> None:
    """Fetch sealed results, verify checksums, and place outputs atomically. Idempotent."""
    from ..pull import pull_many

    project = project_here()
    failures = pulled = 0
    named = bool(jobs) or to is not None  # verify what this pull placed
    with open_store(project) as store:
        for job, outcome in pull_many(project, store, jobs, again=all_jobs, to=to):
            if isinstance(outcome, PullError):
                err(f"orch: error: {outcome}")
                failures += 1
                continue
            pulled += 1
            rel = [str(p.relative_to(project.root)) if p.is_relative_to(project.root)
                   else str(p) for p in outcome.paths]
            print(f"{job.id} {job.name}: {', '.join(rel)}")
            for note in outcome.notes:
                err(f"  {note}")
            if verify and named:
                from ..verify import find_models

                models = find_models(outcome.paths)
                if not models:  # said, and the other jobs are still pulled and verified
                    err(f"orch: error: no model (.keras, .h5 or SavedModel) among the "
                        f"outputs of {job.name}")
                    failures += 1
                failures += _verify(project, models)
        if not pulled and not failures:
            print("nothing to pull")
        if verify and not named:
            failures += _verify_pending(project, store)
    if failures:
        raise typer.Exit(1)


def _verify(project: Any, models: list[Path]) -> int:
    """Verify ``models`` (printing a line for each); how many failed."""
    from ..verify import verify_and_record

    failed = 0
    for line in verify_and_record(project, models):
        if isinstance(line, PullError):
            err(f"orch: error: {line}")
            failed += 1
        else:
            print(f"  verified {line}")
    return failed


def _verify_pending(project: Any, store: Any) -> int:
    """`orch pull --verify` with no names: every pulled model not verified yet."""
    from ..verify import unverified

    todo, total = unverified(project, store)
    if not todo:
        print("nothing to verify: " + (f"all {total} pulled model(s) are verified already"
                                       if total else "no pulled job has a model (.keras, "
                                       ".h5 or SavedModel) in place"))
        return 0
    print(f"verifying {len(todo)} pulled model(s) not verified yet"
          + (f" ({total - len(todo)} verified already)" if total > len(todo) else ""))
    return _verify(project, [model for _, model in todo])
