"""The run meanings of a write into any vector store: `snapshot` (the batch is the whole truth) or `append`.

Layer 0, standard library only: the command's parser, BigQuery, Vector Search and PostgreSQL read the one
spelling without importing each other or a database driver. What each target does with them:
`vectorstore.snapshot` (PostgreSQL), `vectorstore.bigquery` and `vectorstore.vector_search`.
"""

from __future__ import annotations

#: As `UploadConfig.write_mode`, the `upload_vectors` component, the pipelines and `--write-mode` spell them.
WRITE_MODES = ("snapshot", "append")


def check_write_mode(mode: str) -> str:
    """Returns `mode` when it is one of `WRITE_MODES`.

    Raises:
        ValueError: naming the accepted values.
    """
    if mode not in WRITE_MODES:
        raise ValueError(f"write_mode {mode!r} is not one of {WRITE_MODES}")
    return mode
