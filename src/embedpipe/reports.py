"""Small helpers shared by the Markdown/HTML reports that components write."""

from __future__ import annotations


def length_summary(texts, unit: str = "words") -> dict[str, int]:
    """Length distribution (min, median, p95, max) of a pandas Series of strings, in words or chars."""
    texts = texts.fillna("")
    words = texts.str.len() if unit == "chars" else texts.str.split().str.len()
    if len(words) == 0:
        return {"min": 0, "median": 0, "p95": 0, "max": 0}
    return {
        "min": int(words.min()),
        "median": int(words.median()),
        "p95": int(words.quantile(0.95)),
        "max": int(words.max()),
    }


def log_metrics(metrics_artifact, values: dict[str, float]) -> None:
    """Logs every value to a KFP `Metrics` artifact, so the Vertex UI shows it."""
    for name, value in values.items():
        metrics_artifact.log_metric(name, float(value) if not isinstance(value, int) else value)


def _svg_scatter(points: list[tuple[float, float]], names: tuple[str, str], size: int = 320) -> str:
    """Per-query NDCG@10, the first evaluation (x) vs the second (y), with the diagonal; points above it improved."""
    import html

    x_name, y_name = (html.escape(name) for name in names)
    pad = 36
    span = size - 2 * pad

    def xy(x, y):
        return pad + x * span, size - pad - y * span

    dots = "".join(
        f'<circle cx="{xy(x, y)[0]:.1f}" cy="{xy(x, y)[1]:.1f}" r="3" fill="{"#1a7f37" if y > x else "#cf222e" if y < x else "#57606a"}" fill-opacity="0.6"/>'
        for x, y in points
    )
    x0, y0 = xy(0, 0)
    x1, y1 = xy(1, 1)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" role="img">'
        f'<rect x="{pad}" y="{pad}" width="{span}" height="{span}" fill="none" stroke="#d0d7de"/>'
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#8c959f" stroke-dasharray="4"/>{dots}'
        f'<text x="{size / 2}" y="{size - 8}" text-anchor="middle" font-size="12">{x_name} NDCG@10</text>'
        f'<text x="12" y="{size / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 12 {size / 2})">{y_name} NDCG@10</text>'
        "</svg>"
    )


def _svg_histogram(
    values: list[float], *, lo: float, hi: float, bins: int = 20, size: tuple[int, int] = (420, 220), label: str
) -> str:
    width, height = size
    pad = 30
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int((v - lo) / (hi - lo) * bins)))] += 1
    top = max(counts) or 1
    bar = (width - 2 * pad) / bins
    bars = "".join(
        f'<rect x="{pad + i * bar:.1f}" y="{height - pad - c / top * (height - 2 * pad):.1f}" width="{bar - 1:.1f}" '
        f'height="{c / top * (height - 2 * pad):.1f}" fill="#0969da"><title>{c}</title></rect>'
        for i, c in enumerate(counts)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">{bars}'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#57606a"/>'
        f'<text x="{pad}" y="{height - 10}" font-size="11">{lo:g}</text>'
        f'<text x="{width - pad}" y="{height - 10}" font-size="11" text-anchor="end">{hi:g}</text>'
        f'<text x="{width / 2}" y="{height - 10}" font-size="12" text-anchor="middle">{label}</text>'
        f'<text x="{pad}" y="18" font-size="11">max {top} queries</text></svg>'
    )


def evaluation_report(split: str, evaluations, comparison, retrieval: str = "exact cosine search") -> str:
    """A self-contained HTML report: metric table, verdict, per-query plots (inline SVG).

    `retrieval` says how the documents were found (a table's search modes for `evaluate --table`)."""
    import html

    from embedpipe.metrics import metric_names

    names = metric_names()
    header = "".join(
        f"<th>{html.escape(e.name)}<br><small>{html.escape(str(e.model))}</small></th>" for e in evaluations
    )
    rows = "".join(
        "<tr><td>" + name + "</td>" + "".join(f"<td>{e.metrics[name]:.4f}</td>" for e in evaluations) + "</tr>"
        for name in names
    )
    base = evaluations[0]
    plots = []
    if len(evaluations) > 1:
        tuned = evaluations[1]
        common = sorted(set(base.per_query) & set(tuned.per_query))
        points = [(base.per_query[q]["ndcg@10"], tuned.per_query[q]["ndcg@10"]) for q in common]
        gains = [t - b for b, t in points]
        better = sum(g > 0 for g in gains)
        worse = sum(g < 0 for g in gains)
        plots.append(
            f"<h2>Per query</h2><p>{better} queries improved, {worse} got worse, {len(gains) - better - worse} unchanged.</p>"
        )
        plots.append(_svg_scatter(points, (base.name, tuned.name)))
        label = html.escape(f"{tuned.name} − {base.name} NDCG@10 per query")
        plots.append(_svg_histogram(gains, lo=-1, hi=1, label=label))
    else:
        values = [m["ndcg@10"] for m in base.per_query.values()]
        plots.append("<h2>Per query</h2>" + _svg_histogram(values, lo=0, hi=1, label="NDCG@10 per query"))
    seconds = ", ".join(
        f"{e.name} {e.seconds:.0f} s{' (cached corpus vectors)' if e.reused_embeddings else ''}" for e in evaluations
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>embedpipe evaluation: {html.escape(split)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#1f2328}}
table{{border-collapse:collapse}}td,th{{border:1px solid #d0d7de;padding:4px 10px;text-align:right}}
td:first-child{{text-align:left}}.verdict{{font-size:1.2em;padding:.6em;background:#f6f8fa;border-left:4px solid #0969da}}</style>
</head><body>
<h1>Retrieval evaluation — {html.escape(split)} split</h1>
<p class="verdict">{html.escape(comparison.sentence())}</p>
<p>{len(base.per_query)} queries with a relevant label, {len(base.corpus_ids):,} documents; {html.escape(retrieval)};
metrics as trec_eval computes them. Time: {seconds}.</p>
<table><tr><th>metric</th>{header}</tr>{rows}</table>
{"".join(plots)}
</body></html>
"""
