"""The embedding job: a Beam pipeline that embeds a corpus into Parquet vector shards (and a vector store).

Modules:
    settings: `ModelSettings` and `DataflowSettings`, each option declared once.
    types: the typed elements between the stages (`Document`, `EmbedItem`, `VectorRow`, ...).
    documents: parsing records, content hashes, token chunking (plain functions).
    pipeline: the Beam transforms (`build_pipeline`, `embed_documents`) and `EmbedConfig`.
    handler: the RunInference ModelHandler and the encoder (model identity and prompts: `embedpipe.models`).
    runtime: what the batch and streaming jobs share on Beam (counters, local runners, model errors).
    worker_logs: the lines our code logs in the local runner's worker processes, readable on the console.
    job: `prepare_config` + `run_job`, and `python -m embedpipe.embed.job` (local runner or Dataflow).
    task: the `embed_corpus` component's body (local runner or Dataflow, `gcp_resources`).
    reuse: carrying `evaluate`'s corpus vectors over instead of embedding them again.
    sinks: Beam writes into the vector store.
    dataflow: `gcp_resources` of a Dataflow job, the environment's project.
    streaming: Pub/Sub document changes into pgvector (`python -m embedpipe.embed.streaming`).
"""
