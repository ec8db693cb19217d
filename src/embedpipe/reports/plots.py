"""The reports' plots: matplotlib figures rendered to SVG, to be inlined in an HTML page.

Text stays text (`svg.fonttype: none`): tick labels and titles are `<text>` elements a browser draws with
its own fonts, a reader can select and a test can find. Every function returns the `<svg>` element alone
(no XML prologue), ready for a template.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display: reports are written by batch jobs and containers

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

#: Colours: tuned/better, base/worse, unchanged (GitHub's palette, legible for most colour-blind readers).
BETTER, WORSE, SAME, BASE, TUNED = "#1a7f37", "#cf222e", "#8c959f", "#0969da", "#bc4c00"
#: Edges of the gain bins either side of "unchanged" (NDCG@10 differences lie in [-1, 1]).
GAIN_EDGES = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)
#: Two per-query values closer than this are "the same" (float noise, not a change).
SAME_TOLERANCE = 1e-9

_STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "embedpipe",  # the same figure gives the same SVG ids, run after run
    "font.family": "sans-serif",
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#d0d7de",
    "grid.linewidth": 0.6,
}


def _svg(figure) -> str:
    buffer = io.StringIO()
    # No metadata block: no date (the same figure gives the same bytes) and no RDF links to outside schemas.
    metadata = dict.fromkeys(("Date", "Creator", "Format", "Type"))
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata=metadata)
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _figure(width: float, height: float):
    """A figure and its axes; called inside `plt.rc_context(_STYLE)`, which must still hold at `_svg`."""
    return plt.subplots(figsize=(width, height))


def scatter_per_query(pairs: Sequence[tuple[float, float]], names: tuple[str, str], metric: str = "NDCG@10") -> str:
    """Per-query values of two models, x the first, y the second, with the diagonal.

    Queries with the same pair of values (many score 1.0 with both models) share one dot whose area grows
    with their number, and the number is written beside it, so no query hides behind another.

    Args:
        pairs: (first model's value, second model's value) per query, each in [0, 1].
        names: The two models' short names.
        metric: The metric's name, for the axis labels.

    Returns:
        An `<svg>` element.
    """
    with plt.rc_context(_STYLE):
        figure, axes = _figure(3.8, 3.7)
        counts = Counter((round(x, 3), round(y, 3)) for x, y in pairs)
        xs, ys = [p[0] for p in counts], [p[1] for p in counts]
        sizes = [30 + 30 * (n - 1) ** 0.75 for n in counts.values()]
        colours = [BETTER if y > x + SAME_TOLERANCE else WORSE if y < x - SAME_TOLERANCE else SAME for x, y in counts]
        axes.plot([0, 1], [0, 1], color=SAME, linestyle="--", linewidth=0.8, zorder=1)
        axes.scatter(xs, ys, s=sizes, c=colours, alpha=0.6, edgecolors="white", linewidths=0.5, zorder=2)
        for (x, y), n in counts.items():
            if n > 1:
                axes.annotate(str(n), (x, y), xytext=(5, -9), textcoords="offset points", fontsize=8)
        axes.set(xlim=(-0.03, 1.05), ylim=(-0.03, 1.05), aspect="equal")
        axes.set_xlabel(f"{names[0]} {metric}")
        axes.set_ylabel(f"{names[1]} {metric}")
        axes.set_title(f"{metric} per query (above the line: {names[1]} better)", fontsize=10)
        return _svg(figure)


def gain_labels() -> list[str]:
    """The gain bars' labels, most negative first, "unchanged" in the middle."""
    losses = [f"{-hi:+g} to {-lo:+g}" if lo else f"{-hi:+g} to <0" for lo, hi in zip(GAIN_EDGES, GAIN_EDGES[1:])]
    gains = [f">0 to {hi:+g}" if not lo else f"{lo:+g} to {hi:+g}" for lo, hi in zip(GAIN_EDGES, GAIN_EDGES[1:])]
    return [*reversed(losses), "unchanged", *gains]


def gain_counts(gains: Sequence[float]) -> list[int]:
    """How many gains fall in each bar of `gain_labels()`: a difference within SAME_TOLERANCE of 0 is
    "unchanged"; a loss of 0.05 goes to the "-0.1 to -0.05" bar (edges belong to the bar farther out)."""
    bins = len(GAIN_EDGES) - 1
    counts = [0] * (2 * bins + 1)
    for gain in gains:
        if abs(gain) <= SAME_TOLERANCE:
            counts[bins] += 1
            continue
        size = abs(gain)
        index = next((i for i in range(bins) if size < GAIN_EDGES[i + 1]), bins - 1)
        counts[bins + 1 + index if gain > 0 else bins - 1 - index] += 1
    return counts


def gain_bars(gains: Sequence[float], names: tuple[str, str], metric: str = "NDCG@10") -> str:
    """How many queries lost, kept or gained how much (second model minus first), unchanged as its own bar.

    Args:
        gains: Per-query differences, second model minus first.
        names: The two models' short names.
        metric: The metric's name, for the axis label.

    Returns:
        An `<svg>` element.
    """
    labels, counts = gain_labels(), gain_counts(gains)
    middle = len(labels) // 2
    colours = [WORSE] * middle + [SAME] + [BETTER] * middle
    with plt.rc_context(_STYLE):
        figure, axes = _figure(5.4, 3.3)
        bars = axes.bar(range(len(labels)), counts, color=colours, width=0.8, zorder=2)
        axes.bar_label(bars, labels=[str(c) if c else "" for c in counts], fontsize=8, padding=2)
        axes.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
        axes.set_ylabel("queries")
        axes.set_xlabel(f"{names[1]} − {names[0]} {metric}")
        axes.yaxis.get_major_locator().set_params(integer=True)
        axes.grid(axis="x", visible=False)
        axes.set_ylim(0, max(counts + [1]) * 1.15)
        return _svg(figure)


def value_histogram(values: Sequence[float], name: str, metric: str = "NDCG@10") -> str:
    """How many queries scored how much (one model), in tenths from 0 to 1.

    Returns:
        An `<svg>` element.
    """
    with plt.rc_context(_STYLE):
        figure, axes = _figure(5.2, 3.2)
        edges = [i / 10 for i in range(11)]
        counts, _, bars = axes.hist(values, bins=edges, color=BASE, rwidth=0.9, zorder=2)
        axes.bar_label(bars, labels=[str(int(c)) if c else "" for c in counts], fontsize=8, padding=2)
        axes.set_xticks(edges)
        axes.set_xlabel(f"{name} {metric}")
        axes.set_ylabel("queries")
        axes.yaxis.get_major_locator().set_params(integer=True)
        axes.grid(axis="x", visible=False)
        return _svg(figure)


def recall_curves(curves: Mapping[str, Sequence[tuple[int, float]]], marked: Sequence[int] = ()) -> str:
    """Mean recall@k against k (log scale), one line per model.

    Args:
        curves: model name -> [(k, mean recall@k), ...], k ascending.
        marked: Cut-offs to mark with a dot and a tick (the reported metrics' k values).

    Returns:
        An `<svg>` element.
    """
    with plt.rc_context(_STYLE):
        figure, axes = _figure(5.2, 3.4)
        for (name, points), colour in zip(curves.items(), (BASE, TUNED, BETTER, WORSE)):
            ks, values = [k for k, _ in points], [v for _, v in points]
            axes.plot(ks, values, color=colour, linewidth=1.6, label=name)
            dots = [(k, v) for k, v in points if k in marked]
            axes.plot([k for k, _ in dots], [v for _, v in dots], "o", color=colour, markersize=4)
        axes.set_xscale("log")
        ticks = sorted(set(marked)) or [1, 10, 100]
        axes.set_xticks(ticks, [str(k) for k in ticks])
        axes.minorticks_off()
        axes.set_ylim(0, 1.02)
        axes.set_xlabel("k (documents retrieved)")
        axes.set_ylabel("mean recall@k")
        axes.legend(loc="lower right", frameon=False)
        return _svg(figure)


def loss_curve(train: Sequence[tuple[int, float]], validation: Sequence[tuple[int, float]] = ()) -> str:
    """Training loss per logged step, and validation loss where it was computed.

    Args:
        train: (step, training loss) per logged step.
        validation: (step, validation loss) per evaluation.

    Returns:
        An `<svg>` element.
    """
    with plt.rc_context(_STYLE):
        figure, axes = _figure(6.0, 3.4)
        if train:
            axes.plot(
                [s for s, _ in train], [v for _, v in train], color=BASE, linewidth=1.4, marker=".", label="training"
            )
        if validation:
            axes.plot(
                [s for s, _ in validation],
                [v for _, v in validation],
                color=TUNED,
                linewidth=1.4,
                marker="o",
                markersize=4,
                label="validation",
            )
        axes.set_xlabel("step")
        axes.set_ylabel("loss")
        axes.xaxis.get_major_locator().set_params(integer=True)
        if train or validation:
            axes.legend(frameon=False)
        return _svg(figure)


def ndcg_curve(points: Sequence[tuple[int, float]], chosen: int | None = None) -> str:
    """Validation NDCG@10 per evaluation: the base model at step 0 as a dashed line, the chosen step marked.

    Args:
        points: (step, validation NDCG@10) per evaluation; step 0 is the base model.
        chosen: The step saved as the tuned model, or None.

    Returns:
        An `<svg>` element.
    """
    with plt.rc_context(_STYLE):
        figure, axes = _figure(6.0, 3.4)
        steps, values = [s for s, _ in points], [v for _, v in points]
        axes.plot(steps, values, color=TUNED, linewidth=1.4, marker="o", markersize=4, label="validation NDCG@10")
        base = dict(points).get(0)
        if base is not None:
            axes.axhline(base, color=BASE, linewidth=1.0, linestyle="--", label="base model")
        if chosen is not None and chosen in dict(points):
            axes.plot(
                [chosen],
                [dict(points)[chosen]],
                linestyle="none",
                marker="*",
                markersize=12,
                color=BETTER,
                label=f"chosen (step {chosen})",
            )
        axes.set_xlabel("step")
        axes.set_ylabel("NDCG@10")
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.legend(frameon=False)
        return _svg(figure)
