"""The figures of a calibration run, as PNG (or PDF, SVG) files written atomically.

matplotlib is imported only here, inside the functions (the Agg backend, no display): a
missing matplotlib is an ImportError that says how to install it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.fsutil import atomic_path


def require_matplotlib():
    """pyplot on the Agg backend; ImportError naming the fix when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "the PNG needs matplotlib, which is not installed: `pip install matplotlib`, or leave out --plot"
        ) from None
    return plt


# what --plot writes, by its name's ending (calibrate.cli.figure_output refuses any other)
FIGURE_FORMATS = (".png", ".pdf", ".svg")


def _save(fig, path: str | Path) -> None:
    plt = require_matplotlib()
    suffix = Path(path).suffix.lower()
    try:
        with atomic_path(path, suffix=suffix) as tmp:
            fig.savefig(tmp, format=suffix.lstrip("."), dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_false_alarms(report, path: str | Path) -> None:
    """False alarms per hour against threshold, one line per label (log y), the budget as a
    horizontal line, each chosen threshold marked where its line meets it."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(10, 5.5))
    # where "no event" is drawn (log y has no 0): below the budget and below one event
    floor = min(0.5 / report.hours, report.per_hour_budget / 10.0)
    colours = plt.get_cmap("tab20" if len(report.fits) > 10 else "tab10")
    # labels the background never triggers are flat at "no event": drawn once, as a note
    silent = [fit for fit in report.fits if not any(n for _, n in fit.curve)]
    shown = [fit for fit in report.fits if fit not in silent]
    for i, fit in enumerate(shown):
        colour, style = colours(i % colours.N), ("-", "--", ":")[(i // colours.N) % 3]
        x = np.array([t for t, _ in fit.curve])
        rate = np.array([n for _, n in fit.curve]) / report.hours
        ax.plot(
            x,
            np.maximum(rate, floor),
            drawstyle="steps-pre",
            color=colour,
            lw=1.2,
            ls=style,
            label=f"{fit.label} -> {fit.threshold:g}" + ("" if fit.met else " (over budget)"),
        )
        ax.plot(
            [fit.threshold],
            [max(fit.per_hour, floor)],
            marker="o",
            ms=7,
            color=colour,
            markeredgecolor="black",
            zorder=5,
        )
    scope = " for the set (the labels' starts add up)" if report.total else ""
    ax.axhline(
        report.per_hour_budget, color="black", ls="--", lw=1.2, label=f"budget {report.per_hour_budget:g} / h{scope}"
    )
    ax.axhline(floor, color="grey", ls=":", lw=0.8)
    if silent:
        names = ", ".join(fit.label for fit in silent[:6]) + (", ..." if len(silent) > 6 else "")
        ax.plot(
            [],
            [],
            " ",
            label=f"{len(silent)} never triggered ({names}): "
            f"{', '.join(sorted({f'{fit.threshold:g}' for fit in silent}))}",
        )
    ax.set_yscale("log")
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("threshold (smoothed score that starts an event)")
    ax.set_ylabel("false alarms per hour of background")
    ax.set_title(
        f"{report.label_set.name}: {report.hours:.3g} h of background; dotted line: no event; "
        "markers: the chosen thresholds",
        fontsize=10,
    )
    ax.legend(fontsize=7, ncol=2 if len(report.fits) > 25 else 1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, which="both", alpha=0.3)
    _save(fig, path)


def plot_reliability(report, path: str | Path) -> None:
    """Reliability diagrams before, after and (where clips could be held out) held out: accuracy
    per top-1 confidence bin, the diagonal."""
    plt = require_matplotlib()
    panels = [("before", report.before), ("after (the clips it was fitted on)", report.after)]
    if report.held_out is not None:
        panels.append(("held out by recording", report.held_out))
    # constrained layout: the panels' two-line titles below the figure's title, not over it
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.8), sharey=True, layout="constrained")
    for ax, (name, m) in zip(axes, panels):
        rel = m.reliability
        bins = len(rel.count)
        centres = (np.arange(bins) + 0.5) / bins
        filled = rel.count > 0
        ax.bar(
            centres[filled],
            rel.accuracy[filled],
            width=1.0 / bins,
            edgecolor="black",
            color="tab:blue",
            alpha=0.8,
            label="accuracy",
        )
        ax.bar(
            centres[filled],
            rel.confidence[filled] - rel.accuracy[filled],
            bottom=rel.accuracy[filled],
            width=1.0 / bins,
            color="tab:red",
            alpha=0.3,
            label="gap to confidence",
        )
        ax.plot([0, 1], [0, 1], color="black", ls="--", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("top-1 confidence")
        ax.set_title(f"{name}\nECE {m.ece:.3f}, NLL {m.nll:.3f}, accuracy {m.accuracy:.1%}", fontsize=10)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("accuracy")
    cal = report.calibration
    fig.suptitle(
        f"{report.label_set.name}: {report.clips} clips; T = {cal.temperature:.3g}, "
        f"biases in [{cal.biases.min():+.2f}, {cal.biases.max():+.2f}]"
    )
    _save(fig, path)
