"""The embedding job: a Beam pipeline that embeds a corpus into Parquet vector shards (and a vector store).

Modules:
    job: `prepare_config` + `run_job`, and `python -m embedpipe.embed.job` (local runner or Dataflow).
<<<<<<< HEAD
    pipeline: the Beam transforms (`build_pipeline`, `embed_documents`).
    types: the typed elements between the stages (`Document`, `EmbedItem`, `VectorRow`, ...).
    handler: the RunInference ModelHandler, the encoder, model identity and prompts.
=======
    pipeline: the Beam transforms (`build_pipeline`, `embed_documents`) and the vectors schema.
    handler: the RunInference ModelHandler and the encoder (model identity and prompts: `embedpipe.models`).
>>>>>>> arch-models
    documents: parsing records, content hashes, token chunking (plain functions).
    dataflow: Dataflow worker options, `gcp_resources`, and the `embed_corpus` component's entry point.
"""
