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
