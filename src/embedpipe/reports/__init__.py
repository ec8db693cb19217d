"""The reports components write: the evaluation and training HTML pages, and helpers for Markdown reports
and KFP Metrics.

HTML pages are rendered from Jinja2 templates shipped in `templates/`, with matplotlib plots inlined as
SVG (`plots`), so a page is one file that needs no network: the Vertex AI console shows it as an HTML
artifact. matplotlib is imported only when a page with plots is rendered.
"""

from __future__ import annotations

from embedpipe.reports.evaluation import ReportTexts, evaluation_report, short_name
from embedpipe.reports.training import training_report

__all__ = [
    "ReportTexts",
    "evaluation_report",
    "html_uri",
    "length_summary",
    "log_metrics",
    "render",
    "short_name",
    "training_report",
]


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


def html_uri(uri: str) -> str:
    """An HTML artifact's URI with the `.html` ending browsers and the Vertex console's downloads go by.

    A component sets `report.uri = html_uri(report.uri)` before writing `report.path`: KFP records the
    changed URI in the executor output, so the file is found under that name.

    >>> html_uri("/runs/evaluate/report"), html_uri("gs://b/report.html")
    ('/runs/evaluate/report.html', 'gs://b/report.html')
    """
    return uri if uri.endswith(".html") else uri + ".html"


def render(template: str, **context) -> str:
    """Renders one of the package's templates (HTML-escaped; plots are passed already as `Markup`-safe SVG).

    Args:
        template: A file name in `embedpipe/reports/templates/`.
        **context: The template's variables.

    Returns:
        The rendered text.
    """
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("embedpipe.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt variable fails the report, not shows as empty
        trim_blocks=True,
        lstrip_blocks=True,
    )
    from embedpipe import __version__

    return environment.get_template(template).render(version=__version__, **context)
