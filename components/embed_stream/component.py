"""embed_stream: the streaming embedding job (Pub/Sub changes into pgvector), launched on Dataflow or run locally."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output, OutputPath

from embedpipe.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def embed_stream(
    metrics: Output[Metrics],
    gcp_resources: OutputPath(str),
    messages: Input[Dataset] = None,
    subscription: str = "",
    topic: str = "",
    dead_letter_topic: str = "",
    target: str = "postgres",
    database_uri: str = "",
    instance: str = "",
    database: str = "postgres",
    user: str = "postgres",
    password_env: str = "",
    password_secret: str = "",
    iam_auth: bool = False,
    ip_type: str = "PRIVATE",
    table: str = "embeddings",
    model: str = "default",
    tuned_model: Input[Model] = None,
    task_type: str = "RETRIEVAL_DOCUMENT",
    chunk_tokens: int = 0,
    chunk_overlap: int = 0,
    window_seconds: float = 5.0,
    allowed_lateness_seconds: int = 3600,
    write_shards: int = 4,
    batch_size: int = 32,
    output_dimensionality: int = 0,
    backend: str = "torch",
    runner: str = "DirectRunner",
    project: str = "",
    location: str = "us-central1",
    temp_location: str = "",
    service_account: str = "",
    network: str = "",
    subnetwork: str = "",
    machine_type: str = "",
    max_workers: int = 0,
    accelerator_type: str = "",
    accelerator_count: int = 1,
    kms_key: str = "",
    dataflow_image: str = "",
    hf_token_secret: str = "",
):
    """Embeds document changes as they arrive and upserts/deletes them in a pgvector table.

    On Dataflow the task returns once the streaming job runs (it runs until drained); cancelling the task
    before that drains the job. Locally (DirectRunner) it plays a file of messages to its end.

    Args:
        messages: Locally: a file (or folder) of change messages, one JSON object per line, in publish
            order: `{"id": "d1", "title": "...", "text": "...", "metadata": {...}}` or
            `{"id": "d1", "delete": true}` (optional `sequence`, `updated_at` order the versions).
        subscription: On Dataflow: Pub/Sub `projects/P/subscriptions/S` to read (preferred).
        topic: On Dataflow: Pub/Sub `projects/P/topics/T` (a subscription is created by Dataflow).
        dead_letter_topic: `projects/P/topics/T` the dead letters are published to, with the reason
            ("" = logged and counted only).
        target: "postgres" (a URI), "alloydb" or "cloudsql" (through their connectors, as upload_vectors).
        database_uri: Postgres URI without a password; "" = the embedded local database (kfp.local runs).
        instance: AlloyDB `projects/P/locations/L/clusters/C/instances/I` or Cloud SQL `project:region:instance`.
        database: Database name (AlloyDB / Cloud SQL).
        user: Database user; with `iam_auth`, the service account e-mail without `.gserviceaccount.com`.
        password_env: Environment variable with the password (local runs only: workers lack it).
        password_secret: Secret Manager secret `projects/P/secrets/S[/versions/V]` with the password.
        iam_auth: IAM database authentication instead of a password (AlloyDB / Cloud SQL).
        ip_type: Instance IP to connect to: "PRIVATE", "PUBLIC" or "PSC".
        table: pgvector `table` or `schema.table` (created with its HNSW index if missing).
        model: Model reference when `tuned_model` is not given (see embed_corpus).
        tuned_model: A Model artifact (fine_tune's output); wins over `model` when connected.
        task_type: Vertex task type; selects the document prompt.
        chunk_tokens: Split documents into chunks of this many tokens (0 = one vector per document).
        chunk_overlap: Tokens shared by neighbouring chunks.
        window_seconds: Fixed window (publish time) per database write.
        allowed_lateness_seconds: Late messages are still written this long after their window.
        write_shards: Database writers per window.
        batch_size: Texts per forward pass.
        output_dimensionality: Keep this many leading dimensions, re-normalised (0 = all).
        backend: "torch" or "onnx-int8" (CPU workers).
        runner: "DirectRunner" (this task's process, a file of messages) or "DataflowRunner" (Pub/Sub).
        project: Dataflow project ("" = the project the task runs in).
        location: Dataflow region.
        temp_location: gs:// folder for Dataflow temp files ("" = beside the `metrics` artifact).
        service_account: Dataflow worker service account ("" = project default).
        network: VPC network of the workers (where the database is reachable).
        subnetwork: Subnetwork URL of the workers.
        machine_type: Worker machine type.
        max_workers: Autoscaling limit (0 = Dataflow default).
        accelerator_type: GPU per worker, e.g. "nvidia-l4" ("" = CPU workers).
        accelerator_count: GPUs per worker.
        kms_key: Cloud KMS key of the Dataflow job (CMEK; "" = Google-managed).
        dataflow_image: Worker container image ("" = this version's embedpipe Dataflow image).
        hf_token_secret: Secret Manager secret version with a Hugging Face token, for a gated hub model.

    Returns:
        metrics: Locally the job's counts (messages_read, dead_letters, messages_stale, documents_upserted,
            documents_deleted, database_rows_written, ...); on Dataflow they are on the job's page.
        gcp_resources: The Dataflow job (GCPC format), so Vertex links it.
    """
    arguments = dict(locals())  # every parameter, by name: model, Dataflow and connection ones become settings
    from embedpipe.embed.streaming.task import embed_stream_task

    embed_stream_task(**arguments)
