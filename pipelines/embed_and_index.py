"""A smaller pipeline reusing two of the components: embed a corpus with an existing model and index it.

For teams that already have a model (the packaged MiniLM, `google/embeddinggemma-300m`, or a model
`tune_and_index` tuned and registered) and a corpus to (re-)index: importer → embed_corpus (Dataflow) →
upload_vectors. Passing the `vectors` folder of an earlier run as `previous_vectors_path` re-embeds only
the documents that changed.
"""

from kfp import dsl

from embedpipe.components import embed_corpus, upload_vectors
from embedpipe.models import CLOUD_DEFAULT_MODEL
from embedpipe.pipelines.options import EMBED_ARGUMENTS, UPLOAD_ARGUMENTS, arguments_for

PIPELINE_NAME = "embedpipe-embed-and-index"
PROJECT_PLACEHOLDER = "{{$.pipeline_google_cloud_project_id}}"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Embed a corpus with an existing sentence-transformers model (Beam on Dataflow) and write "
    "the vectors to a vector database.",
)
def embed_and_index(
    corpus_path: str,
    model: str = CLOUD_DEFAULT_MODEL,
    task_type: str = "RETRIEVAL_DOCUMENT",
    previous_vectors_path: str = "",
    project: str = PROJECT_PLACEHOLDER,
    location: str = "us-central1",
    output_dimensionality: int = 0,
    chunk_tokens: int = 0,
    chunk_overlap: int = 0,
    max_dead_letter_share: float = 0.1,
    max_dead_letters: int = -1,
    embed_runner: str = "DataflowRunner",
    dataflow_temp_location: str = "",
    dataflow_service_account: str = "",
    dataflow_network: str = "",
    dataflow_subnetwork: str = "",
    dataflow_machine_type: str = "g2-standard-4",
    dataflow_max_workers: int = 4,
    dataflow_accelerator_type: str = "nvidia-l4",
    dataflow_accelerator_count: int = 1,
    dataflow_kms_key: str = "",
    hf_token_secret: str = "",
    vector_target: str = "alloydb",
    database_uri: str = "",
    database_instance: str = "",
    database_name: str = "postgres",
    database_user: str = "postgres",
    database_password_secret: str = "",
    database_iam_auth: bool = True,
    vector_table: str = "embeddings",
    vector_search_index: str = "",
    vector_search_update_method: str = "batch",
    vector_search_previous_ids: str = "",
    write_mode: str = "snapshot",
):
    """Embeds and indexes a corpus.

    Args:
        corpus_path: Corpus to index: BEIR `corpus.jsonl` or Parquet, a file or a folder, `gs://` or local.
        model: A Hugging Face id (default google/embeddinggemma-300m), a `gs://` model folder (e.g. a tuned
            model's artifact), or "default" for the packaged all-MiniLM-L6-v2.
        task_type: Vertex task type; selects the document prompt.
        previous_vectors_path: The `vectors` folder of an earlier run: unchanged documents are carried over.
        project: Google Cloud project (default: the run's own).
        location: Region of Dataflow.
        output_dimensionality: Keep this many leading dimensions, re-normalised (0 = all).
        chunk_tokens: Split documents into chunks of this many tokens (0 = whole documents).
        chunk_overlap: Tokens shared by neighbouring chunks.
        max_dead_letter_share: The embedding task fails, writing no vectors, when more than this share of
            the corpus records are dead letters (kept in the vectors' `_dead_letters/`; 1 = never).
        max_dead_letters: The same by count (-1 = no limit by count).
        embed_runner: "DataflowRunner", or "DirectRunner" to embed inside the task.
        dataflow_temp_location: `gs://` temp folder of the Dataflow job ("" = beside the artifacts).
        dataflow_service_account: Dataflow worker service account.
        dataflow_network: Dataflow worker network.
        dataflow_subnetwork: Dataflow worker subnetwork URL.
        dataflow_machine_type: Dataflow worker machine type.
        dataflow_max_workers: Dataflow autoscaling limit.
        dataflow_accelerator_type: Dataflow worker GPU ("" = CPU workers).
        dataflow_accelerator_count: GPUs per Dataflow worker.
        dataflow_kms_key: Cloud KMS key of the Dataflow job (CMEK; "" = Google-managed).
        hf_token_secret: Secret Manager secret version (`projects/P/secrets/S/versions/V`) holding a Hugging
            Face token, for a gated model such as google/embeddinggemma-300m; read by the tasks that load the
            model (fine-tune, evaluate, the Dataflow workers) at run time, never logged ("" = none).
        vector_target: "alloydb", "cloudsql", "postgres", "bigquery" or "vertex_vector_search".
        database_uri: Postgres URI (without password) for "postgres".
        database_instance: AlloyDB instance URI or Cloud SQL connection name.
        database_name: Database name.
        database_user: Database user.
        database_password_secret: Secret Manager secret holding the password (never the password itself).
        database_iam_auth: IAM database authentication (AlloyDB / Cloud SQL) instead of a password.
        vector_table: Table of vectors.
        vector_search_index: Vertex AI Vector Search index `projects/P/locations/L/indexes/ID`, required with
            `vector_target="vertex_vector_search"` (`embedpipe submit` refuses the run without it). Its datapoint
            files and id listing go to the upload task's `vector_search_contents` output, under the pipeline root.
        vector_search_update_method: "batch" (the index was created with BATCH_UPDATE: the files and
            `update_embeddings`, a snapshot being a complete overwrite) or "stream" (STREAM_UPDATE:
            `upsert_datapoints`, and for a snapshot `remove_datapoints`).
        vector_search_previous_ids: For a streamed snapshot: the previous run's id listing, its upload task's
            `vector_search_contents` output + `/contents.ids.jsonl` (Vector Search cannot list an index's ids).
        write_mode: What a run means for what the vector store holds beyond this run's vectors. "snapshot"
            (default): the corpus is the whole truth; rows of documents removed from it, and chunks past the
            end of a document edited shorter, are deleted (pgvector: in the same transaction as the upserts;
            BigQuery: in the MERGE; Vector Search: as `vector_search_update_method` says). "append": upserts
            only; nothing is deleted.
    """
    parameters = dict(locals())  # the pipeline parameters, taken before any task is added
    corpus = dsl.importer(artifact_uri=corpus_path, artifact_class=dsl.Dataset, reimport=False).set_display_name(
        "import-corpus"
    )
    embed_options = dict(corpus=corpus.output, model=model, **arguments_for(EMBED_ARGUMENTS, parameters))
    upload_options = arguments_for(UPLOAD_ARGUMENTS, parameters)
    with dsl.If(previous_vectors_path != "", name="incremental"):
        previous = dsl.importer(
            artifact_uri=previous_vectors_path, artifact_class=dsl.Dataset, reimport=False
        ).set_display_name("import-previous-vectors")
        changed = embed_corpus(previous_vectors=previous.output, **embed_options).set_display_name("embed-changed")
        changed.set_caching_options(False)  # the corpus is a path: a file edited in place is the same artifact
        upload_vectors(vectors=changed.outputs["vectors"], **upload_options).set_display_name(
            "upload-vectors-incremental"
        ).set_caching_options(False)  # writes a table outside the run
    with dsl.Else(name="full"):
        vectors = embed_corpus(**embed_options).set_display_name("embed-corpus").set_caching_options(False)
        upload_vectors(vectors=vectors.outputs["vectors"], **upload_options).set_display_name(
            "upload-vectors"
        ).set_caching_options(False)
