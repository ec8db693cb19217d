"""Pipeline parameters → component arguments, shared by the pipelines that embed and upload vectors.

Both pipelines expose the same Dataflow and database parameters under the same names; these tables say
which component argument each one feeds, so the wiring is written once.
"""

#: pipeline parameter -> `embed_corpus` argument
EMBED_ARGUMENTS = {
    "task_type": "task_type",
    "chunk_tokens": "chunk_tokens",
    "chunk_overlap": "chunk_overlap",
    "output_dimensionality": "output_dimensionality",
    "embed_runner": "runner",
    "project": "project",
    "location": "location",
    "dataflow_temp_location": "temp_location",
    "dataflow_service_account": "service_account",
    "dataflow_network": "network",
    "dataflow_subnetwork": "subnetwork",
    "dataflow_machine_type": "machine_type",
    "dataflow_max_workers": "max_workers",
    "dataflow_accelerator_type": "accelerator_type",
    "dataflow_accelerator_count": "accelerator_count",
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
}


def arguments_for(table: dict[str, str], parameters: dict) -> dict:
    """The component arguments named by `table`, taken from a pipeline's parameters (its `locals()`)."""
    return {argument: parameters[name] for name, argument in table.items()}
