"""Learning curves drawn for people: a metrics table and a plot in plain text, and a
PNG with matplotlib. Pure functions of :class:`~orchestrator.curves.Curve` values;
matplotlib is imported only by :func:`save_png`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .curves import Curve, higher_is_better, summarize
from .errors import OrchError

#: One marker per curve, in legend order (then they repeat).
MARKERS = "●▲■◆+x*o"
GAP = "  "


def number(value: float) -> str:
    """A metric value in at most about 7 characters."""
    return f"{value:.4g}"


def table(curves: Sequence[Curve], metrics: Sequence[str], width: int) -> str:
    """Best and final value of each metric, one line per job. The header says for
    each metric whether its best is the minimum or the maximum; a metric a job lacks
    shows ``-``. Metrics that do not fit in ``width`` columns go on to a next table."""
    names = ["job", *(c.label for c in curves)]
    epochs = ["epochs", *(str(len(c.rows)) for c in curves)]
    left = [max(map(len, names)), max(map(len, epochs))]
    blocks: list[list[str]] = []  # per metric: its column lines, header first
    for metric in metrics:
        sums = [summarize(c, metric) for c in curves]
        best = [f"{number(s.best)} @{s.best_epoch}" if s else "-" for s in sums]
        final = [number(s.final) if s else "-" for s in sums]
        title = f"{metric} ({'max' if higher_is_better(metric) else 'min'} is best)"
        wb = max(len("best"), *map(len, best))
        wf = max(len("final"), *map(len, final))
        wide = max(len(title), wb + 1 + wf)
        wb = wide - 1 - wf
        lines = [title.ljust(wide), f"{'best'.ljust(wb)} {'final'.ljust(wf)}"]
        lines += [f"{b.ljust(wb)} {f.ljust(wf)}" for b, f in zip(best, final)]
        blocks.append(lines)
    room = max(1, width - sum(left) - len(GAP) * 2)
    groups: list[list[list[str]]] = [[]]
    used = 0
    for block in blocks:
        if groups[-1] and used + len(GAP) + len(block[0]) > room:
            groups.append([])
            used = 0
        groups[-1].append(block)
        used += len(block[0]) + (len(GAP) if used else 0)
    out: list[str] = []
    for group in groups:
        heads = ["", names[0], *names[1:]]
        eps = ["", epochs[0], *epochs[1:]]
        for row in range(len(curves) + 2):
            cells = [heads[row].ljust(left[0]), eps[row].ljust(left[1]),
                     *(block[row] for block in group)]
            out.append(GAP.join(cells).rstrip())
        out.append("")
    return "\n".join(out).rstrip("\n")


def plot(curves: Sequence[Curve], metric: str, width: int, height: int = 12) -> str:
    """The curves of ``metric`` against the epoch, each with its own marker, in a
    frame exactly ``width`` characters wide, with a legend under it. Every line of
    the result is ``width`` characters long (padded)."""
    series = [c.points(metric) for c in curves]
    values = [v for s in series for _, v in s]
    if not values:
        raise OrchError(f"no values of {metric} to plot")
    top, bottom = max(values), min(values)
    if top == bottom:
        pad = abs(top) * 0.05 or 1.0
        top, bottom = top + pad, bottom - pad
    labels = [number(top), number((top + bottom) / 2), number(bottom)]
    lw = max(map(len, labels))
    plot_w = max(2, width - lw - 2)  # "label ┤" then the plot
    last = max(x for s in series for x, _ in s)
    grid = [[" "] * plot_w for _ in range(height)]

    def cell(x: float, v: float) -> tuple[int, int]:
        col = 0 if last == 1 else round((x - 1) / (last - 1) * (plot_w - 1))
        row = round((top - v) / (top - bottom) * (height - 1))
        return col, row

    for marker, points in zip(_markers(len(curves)), series):
        cells = [cell(x, v) for x, v in points]
        for (c0, r0), (c1, r1) in zip(cells, cells[1:]):
            _segment(grid, c0, r0, c1, r1, "·")
        for c, r in cells:
            grid[r][c] = marker
    lines = []
    for r, row in enumerate(grid):
        label = labels[0] if r == 0 else labels[2] if r == height - 1 else \
            labels[1] if r == (height - 1) // 2 else ""
        tick = "┤" if label else "│"
        lines.append(f"{label.rjust(lw)} {tick}{''.join(row)}")
    lines.append(" " * lw + " └" + "─" * plot_w)
    axis = [" "] * plot_w
    _put(axis, 0, "1")
    _put(axis, plot_w - len(str(last)), str(last))
    name = f"epoch · {metric}"
    _put(axis, max(len(str(last)) + 2, (plot_w - len(name)) // 2), name)
    lines.append(" " * (lw + 2) + "".join(axis))
    lines += _legend(curves, width)
    return "\n".join(line[:width].ljust(width) for line in lines)


def _markers(n: int) -> list[str]:
    return [MARKERS[i % len(MARKERS)] for i in range(n)]


def _put(row: list[str], at: int, text: str) -> None:
    for i, ch in enumerate(text):
        if 0 <= at + i < len(row):
            row[at + i] = ch


def _segment(grid: list[list[str]], c0: int, r0: int, c1: int, r1: int, dot: str) -> None:
    """Dots between two points (ends excluded), so a curve reads as a line."""
    steps = max(abs(c1 - c0), abs(r1 - r0))
    for i in range(1, steps):
        c = round(c0 + (c1 - c0) * i / steps)
        r = round(r0 + (r1 - r0) * i / steps)
        if grid[r][c] == " ":
            grid[r][c] = dot


def _legend(curves: Sequence[Curve], width: int) -> list[str]:
    entries = [f"{m} {c.label}" for m, c in zip(_markers(len(curves)), curves)]
    lines, line = [], ""
    for entry in entries:
        if line and len(line) + 3 + len(entry) > width:
            lines.append(line)
            line = ""
        line = f"{line}   {entry}" if line else entry
    return [*lines, line]


def save_png(curves: Sequence[Curve], metric: str, path: Path) -> None:
    """Draw the curves of ``metric`` into a PNG at ``path`` (matplotlib's Agg backend;
    written to a temporary file, then renamed). OrchError if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise OrchError("--png needs matplotlib: pip install 'orch[tf]' (or pip install "
                        "matplotlib)") from exc
    from .atomic import write_with

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        for curve in curves:
            points = curve.points(metric)
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", markersize=3, label=curve.label)
        best = "max" if higher_is_better(metric) else "min"
        ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} ({best} is best)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        write_with(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)
