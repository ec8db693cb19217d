"""Pipeline parameters → component arguments, shared by the pipelines that embed and upload vectors.

Both pipelines expose the same Dataflow and database parameters under the same names; these tables say
which component argument each one feeds, so the wiring is written once.
"""

from embedpipe.embed.settings import pipeline_arguments

#: pipeline parameter -> `embed_corpus` argument (the Dataflow ones from `DataflowSettings`, declared once)
EMBED_ARGUMENTS = {
    "task_type": "task_type",
    "chunk_tokens": "chunk_tokens",
    "chunk_overlap": "chunk_overlap",
    "max_dead_letter_share": "max_dead_letter_share",
    "max_dead_letters": "max_dead_letters",
    "output_dimensionality": "output_dimensionality",
    "embed_runner": "runner",
    "hf_token_secret": "hf_token_secret",
    **pipeline_arguments(),
}

#: pipeline parameter -> `upload_vectors` argument
UPLOAD_ARGUMENTS = {
    "vector_target": "target",
    "database_uri": "database_uri",
    "database_instance": "instance",
    "database_name": "database",
    "database_user": "user",
    "database_password_secret": "password_secret",
    "database_iam_auth": "iam_auth",
    "vector_table": "table",
    "vector_search_index": "vector_search_index",
    "vector_search_update_method": "vector_search_update_method",
    "vector_search_previous_ids": "vector_search_previous_ids",
    "write_mode": "write_mode",
}


def arguments_for(table: dict[str, str], parameters: dict) -> dict:
    """The component arguments named by `table`, taken from a pipeline's parameters (its `locals()`)."""
    return {argument: parameters[name] for name, argument in table.items()}
