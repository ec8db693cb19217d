"""The example data shipped with embedpipe, installed as `embedpipe.examples`.

`embedpipe run` and `embedpipe prepare` default to it, so they work from an installed wheel anywhere,
not only in a checkout of the repository.
"""

from pathlib import Path


def scifact_mini() -> Path:
    """The folder of the 400-document SciFact slice (BEIR layout; licence in its README)."""
    return Path(__file__).resolve().parent / "scifact-mini"
