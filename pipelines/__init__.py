"""embedpipe's pipelines, composed from `embedpipe.components`; `compile.py` writes their YAML."""

from embedpipe.extras import optional_imports

# The graphs name GCPC's Vertex ops (registration, deployment, the CustomJob), which kfp needs to compile them
# even when a local run skips those steps: GCPC comes with the `local` extra (and `cloud`).
with optional_imports("local", "the pipeline definitions (embedpipe run, compile.py)"):
    from embedpipe.pipelines.embed_and_index import embed_and_index
    from embedpipe.pipelines.tune_and_index import tune_and_index, tune_and_index_custom_job

#: Every pipeline compile.py writes, by file name.
PIPELINES = {
    "tune_and_index": tune_and_index,
    "tune_and_index_custom_job": tune_and_index_custom_job,
    "embed_and_index": embed_and_index,
}

__all__ = ["tune_and_index", "tune_and_index_custom_job", "embed_and_index", "PIPELINES"]
