"""The embedpipe pipeline: prepare → evaluate(base) ∥ fine_tune (GPU) → evaluate(tuned vs base) → quality
gate → register (+ optional deploy) → embed_corpus (Dataflow) → upload_vectors.

Parameters mirror Vertex AI's `tune-text-embedding-model` template where they exist
(`base_model_version_id`, `task_type`, `corpus_path`, `queries_path`, `train_label_path`,
`test_label_path`, `validation_label_path`, `batch_size`, `train_steps` and its older name `iterations`,
`learning_rate_multiplier`, `output_dimensionality`, `accelerator_type`, `accelerator_count`,
`machine_type`), so a Vertex request's `parameterValues` are accepted as they are (`embedpipe.vertex`).

`tune_and_index_custom_job` is the same pipeline with fine-tune as a Vertex AI CustomJob (its own machine
type, service account, network and CMEK key); `pipelines/vertex.py` says why there are two. Caching is off
for the tasks that read or write what lives outside the run (files named by path, the vector table).
"""

from kfp import dsl

from embedpipe.components import (
    embed_corpus,
    evaluate,
    package_for_serving,
    prepare_data,
    quality_gate_failed,
    select_corpus,
    upload_vectors,
)
from embedpipe.models import CLOUD_DEFAULT_MODEL
from embedpipe.pipelines.options import EMBED_ARGUMENTS, UPLOAD_ARGUMENTS, arguments_for
from embedpipe.pipelines.vertex import (
    FINE_TUNE_RETRY,
    custom_job_variant,
    fine_tune_task,
    on_evaluation_machine,
    register_and_deploy,
)

PIPELINE_NAME = "embedpipe-tune-and-index"
#: Filled in by Vertex AI Pipelines with the project the run belongs to.
PROJECT_PLACEHOLDER = "{{$.pipeline_google_cloud_project_id}}"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Fine-tune an open embedding model on BEIR-style data, prove it beats the base model, "
    "register it, and embed and index a corpus in a vector database.",
)
def tune_and_index(
    corpus_path: str,
    queries_path: str,
    train_label_path: str,
    test_label_path: str = "",
    validation_label_path: str = "",
    project: str = PROJECT_PLACEHOLDER,
    location: str = "us-central1",
    base_model_version_id: str = CLOUD_DEFAULT_MODEL,
    task_type: str = "RETRIEVAL_QUERY",
    batch_size: int = 32,
    train_steps: int = 0,
    iterations: int = 1000,
    learning_rate_multiplier: float = 1.0,
    output_dimensionality: int = 0,
    max_seq_length: int = 0,
    hard_negatives: bool = False,
    seed: int = 42,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.0,
    validation_steps: int = 0,
    early_stopping_patience: int = 3,
    base_learning_rate: float = 0.0,
    accelerator_type: str = "NVIDIA_L4",
    accelerator_count: int = 1,
    machine_type: str = "",
    training_cpu_limit: str = "8",
    training_memory_limit: str = "32G",
    training_machine_type: str = "g2-standard-8",
    training_service_account: str = "",
    training_network: str = "",
    evaluation_accelerator_type: str = "NVIDIA_L4",
    evaluation_accelerator_count: int = 1,
    evaluation_cpu_limit: str = "8",
    evaluation_memory_limit: str = "32G",
    encryption_spec_key_name: str = "",
    hf_token_secret: str = "",
    quality_margin: float = 0.0,
    index_with_base_model: bool = False,
    register_model: bool = True,
    model_display_name: str = "embedpipe-tuned-model",
    parent_model: str = "",
    model_version_aliases: list = [],  # noqa: B006 (KFP compiles the default into the YAML; never mutated)
    model_labels: dict = {},  # noqa: B006
    deploy_model: bool = False,
    endpoint_machine_type: str = "n1-standard-4",
    endpoint_accelerator_type: str = "",
    endpoint_accelerator_count: int = 0,
    endpoint_min_replicas: int = 1,
    endpoint_max_replicas: int = 1,
    index_corpus_path: str = "",
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
    """Tunes, evaluates, registers and indexes.

    Args:
        corpus_path: `corpus.jsonl` (`_id`, `title`, `text`), `gs://` URI or local path.
        queries_path: `queries.jsonl` (`_id`, `text`).
        train_label_path: Train labels TSV (`query-id`, `corpus-id`, `score`).
        test_label_path: Test labels TSV; empty = `test_fraction` of the train queries.
        validation_label_path: Validation labels TSV; empty = `validation_fraction` of the train queries.
        project: Google Cloud project (default: the run's own).
        location: Region of Vertex AI and Dataflow.
        base_model_version_id: Base model: a Hugging Face id (default google/embeddinggemma-300m), a
            `gs://` folder, or "default" for the packaged all-MiniLM-L6-v2. A Vertex AI model id
            (`textembedding-gecko@003`, `text-embedding-005`, ...) fails the first task, naming its open replacement.
        task_type: Vertex task type (DEFAULT included); selects the prompts in training, evaluation, embedding
            and serving.
        batch_size: Training batch size (in-batch negatives).
        train_steps: Training steps (Vertex's name since template v1.1.3); 0 = `iterations`. Wins over
            `iterations` when both are given (`embedpipe.vertex.resolve_train_steps`, in the fine-tune task).
        iterations: Training steps, Vertex's name up to template v1.1.2; used when `train_steps` is 0.
        learning_rate_multiplier: Multiplies the base learning rate (`base_learning_rate`).
        output_dimensionality: Matryoshka training and truncated vectors of this size (0 = full size).
        max_seq_length: Token limit in training (0 = the model's).
        hard_negatives: Mine hard negatives from the corpus for training.
        seed: Seed of the split and of training.
        test_fraction: Share of train queries used as test when no test labels are given.
        validation_fraction: Share of train queries used as validation when none are given; 0 = the
            fine-tune task holds out 10 % of the train queries itself (none under 200 train queries).
        validation_steps: Steps between the fine-tune task's validation NDCG@10 evaluations (0 = a fifth of
            the run); the best step is the model saved.
        early_stopping_patience: Validation evaluations without improvement before training stops (0 = never).
        base_learning_rate: Learning rate at multiplier 1; 0 = 8e-5 with validation labels, 2e-5 without.
        accelerator_type: GPU of the fine-tune task (Vertex accelerator name).
        accelerator_count: GPUs of the fine-tune task.
        machine_type: Vertex's training machine type (e.g. n1-standard-16). `embedpipe submit` turns it into
            `training_cpu_limit` and `training_memory_limit` (that machine's vCPUs and memory) where those are
            not given; "" = those two decide (with the GPU, Vertex picks the machine).
        training_cpu_limit: vCPUs of the fine-tune task; with the GPU this picks the machine type
            (8 vCPU + 32G + 1 L4 = g2-standard-8).
        training_memory_limit: Memory of the fine-tune task.
        training_machine_type: Machine of the fine-tune CustomJob (tune_and_index_custom_job), e.g.
            "g2-standard-8" for 1 L4, "a2-highgpu-1g" for 1 A100.
        training_service_account: Service account the fine-tune CustomJob runs as (tune_and_index_custom_job;
            "" = the Vertex AI Custom Code Service Agent, as in GCPC). tune_and_index trains in a task of the
            run, as the run's service account (`embedpipe submit --service-account`).
        training_network: VPC network the fine-tune CustomJob is peered with,
            `projects/<number>/global/networks/<name>` (tune_and_index_custom_job; "" = none).
        evaluation_accelerator_type: GPU of the evaluate tasks ("" = CPU only); they run on the train image.
        evaluation_accelerator_count: GPUs of each evaluate task.
        evaluation_cpu_limit: vCPUs of each evaluate task (with the GPU this picks the machine type).
        evaluation_memory_limit: Memory of each evaluate task.
        encryption_spec_key_name: Cloud KMS key (`projects/P/locations/L/keyRings/R/cryptoKeys/K`, in
            `location`) of the registered model, the endpoint and the fine-tune CustomJob ("" = Google-managed).
            The run's own tasks and artifacts take the PipelineJob's key (`embedpipe submit
            --encryption-spec-key-name`, which also fills this parameter and `dataflow_kms_key`).
        hf_token_secret: Secret Manager secret version (`projects/P/secrets/S/versions/V`) holding a Hugging
            Face token, for a gated model such as google/embeddinggemma-300m; read by the tasks that load the
            model (fine-tune, evaluate, the Dataflow workers) at run time, never logged ("" = none).
        quality_margin: The tuned model must beat the base NDCG@10 by this much to be registered and used.
        index_with_base_model: When the tuned model does not pass the gate, index with the base model
            instead of stopping.
        register_model: Register the tuned model in Vertex AI Model Registry (cloud only).
        model_display_name: Display name in Model Registry.
        parent_model: Register the tuned model as a new version of this Model Registry model,
            `projects/P/locations/L/models/M` ("" = a new model).
        model_version_aliases: Aliases of the registered version, e.g. ["candidate"] (Model Registry's rule:
            `[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]`).
        model_labels: Labels of the registered model, e.g. {"team": "search"}.
        deploy_model: Also deploy it to a new endpoint (costs money while it runs; off by default).
        endpoint_machine_type: Endpoint machine type (a CPU machine: the serving image is CPU-only).
        endpoint_accelerator_type: Endpoint GPU ("" = CPU only); a GPU endpoint needs a CUDA serving image
            (containers/README.md).
        endpoint_accelerator_count: Endpoint GPUs per replica (0 without a GPU).
        endpoint_min_replicas: Minimum replicas.
        endpoint_max_replicas: Maximum replicas.
        index_corpus_path: The corpus to embed and index, if not the labelled one (JSONL or Parquet).
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
        vector_target: "alloydb", "cloudsql", "postgres", "bigquery" or "vertex_vector_search".
        database_uri: Postgres URI (without password) for "postgres"; "" locally = the embedded database.
        database_instance: AlloyDB instance URI or Cloud SQL connection name.
        database_name: Database name.
        database_user: Database user (with IAM auth: the service account e-mail without `.gserviceaccount.com`).
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
    prepared = prepare_data(
        corpus_path=corpus_path,
        queries_path=queries_path,
        train_labels_path=train_label_path,
        test_labels_path=test_label_path,
        validation_labels_path=validation_label_path,
        test_fraction=test_fraction,
        validation_fraction=validation_fraction,
        seed=seed,
        base_model=base_model_version_id,
    ).set_display_name("prepare-data")
    prepared.set_caching_options(False)  # reads files by path: one edited in place must not come from cache
    data = prepared.outputs

    base_evaluation = evaluate(
        corpus=data["corpus"],
        queries=data["queries"],
        labels=data["test_labels"],
        base_model=base_model_version_id,
        task_type=task_type,
        split="test",
        hf_token_secret=hf_token_secret,
    ).set_display_name("evaluate-base")
    on_evaluation_machine(base_evaluation, parameters)

    tuning = (
        fine_tune_task(  # a task of the run, or a CustomJob in tune_and_index_custom_job
            parameters,
            corpus=data["corpus"],
            queries=data["queries"],
            train_labels=data["train_labels"],
            validation_labels=data["validation_labels"],
            base_model=base_model_version_id,
            task_type=task_type,
            batch_size=batch_size,
            train_steps=train_steps,
            learning_rate_multiplier=learning_rate_multiplier,
            base_learning_rate=base_learning_rate,
            output_dimensionality=output_dimensionality,
            seed=seed,
            max_seq_length=max_seq_length,
            hard_negatives=hard_negatives,
            iterations=iterations,
            hf_token_secret=hf_token_secret,
            validation_steps=validation_steps,
            early_stopping_patience=early_stopping_patience,
        )
        .set_display_name("fine-tune")
        .set_retry(**FINE_TUNE_RETRY)  # a preempted training resumes from its last checkpoint
    )

    comparison = evaluate(
        corpus=data["corpus"],
        queries=data["queries"],
        labels=data["test_labels"],
        base_model=base_model_version_id,
        tuned_model=tuning.outputs["model"],
        reuse_embeddings=base_evaluation.outputs["corpus_embeddings"],
        task_type=task_type,
        split="test",
        margin=quality_margin,
        hf_token_secret=hf_token_secret,
    ).set_display_name("evaluate-tuned-vs-base")
    on_evaluation_machine(comparison, parameters)

    index_corpus = (
        select_corpus(prepared_corpus=data["corpus"], index_corpus_path=index_corpus_path)
        .set_display_name("select-corpus")
        .set_caching_options(False)  # checks and points at index_corpus_path, which may change in place
        .outputs["corpus"]
    )
    embed_options = arguments_for(EMBED_ARGUMENTS, parameters)
    upload_options = arguments_for(UPLOAD_ARGUMENTS, parameters)

    with dsl.If(comparison.outputs["tuned_is_better"] == True, name="tuned-beats-base"):  # noqa: E712
        with dsl.If(register_model == True, name="register"):  # noqa: E712
            serving = package_for_serving(model=tuning.outputs["model"]).set_display_name("package-for-serving")
            register_and_deploy(serving.outputs["serving_model"], parameters)
        tuned_vectors = embed_corpus(
            corpus=index_corpus,
            model=base_model_version_id,
            tuned_model=tuning.outputs["model"],
            evaluation_embeddings=comparison.outputs["corpus_embeddings"],
            **embed_options,
        ).set_display_name("embed-corpus")
        upload_vectors(vectors=tuned_vectors.outputs["vectors"], **upload_options).set_display_name(
            "upload-vectors"
        ).set_caching_options(False)  # writes a table outside the run: a dropped table must be written again

    with dsl.Elif(index_with_base_model == True, name="index-with-base-model"):  # noqa: E712
        base_vectors = embed_corpus(
            corpus=index_corpus,
            model=base_model_version_id,
            evaluation_embeddings=base_evaluation.outputs["corpus_embeddings"],
            **embed_options,
        ).set_display_name("embed-corpus-base-model")
        upload_vectors(vectors=base_vectors.outputs["vectors"], **upload_options).set_display_name(
            "upload-vectors-base-model"
        ).set_caching_options(False)

    with dsl.Else(name="gate-failed"):
        quality_gate_failed(
            base_ndcg_at_10=comparison.outputs["base_ndcg_at_10"],
            tuned_ndcg_at_10=comparison.outputs["tuned_ndcg_at_10"],
            margin=quality_margin,
        ).set_display_name("quality-gate-failed")


tune_and_index_custom_job = custom_job_variant(
    tune_and_index.pipeline_func,
    name=PIPELINE_NAME + "-custom-job",
    description="tune_and_index with fine-tune as a Vertex AI CustomJob: its own machine type, service account, "
    "VPC network and CMEK key.",
)
