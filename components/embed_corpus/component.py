"""embed_corpus: embed every document with Beam, on the local runner or on Dataflow (GPU workers)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output, OutputPath

from embedpipe.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def embed_corpus(
    corpus: Input[Dataset],
    vectors: Output[Dataset],
    metrics: Output[Metrics],
    gcp_resources: OutputPath(str),
    model: str = "default",
    tuned_model: Input[Model] = None,
    previous_vectors: Input[Dataset] = None,
    evaluation_embeddings: Input[Dataset] = None,
    task_type: str = "RETRIEVAL_DOCUMENT",
    chunk_tokens: int = 0,
    chunk_overlap: int = 0,
    max_dead_letter_share: float = 0.1,
    max_dead_letters: int = -1,
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
    """Embeds a corpus into Parquet vector shards with a Beam job (RunInference, our ModelHandler).

    Args:
        corpus: Corpus, Parquet (prepare_data's `corpus`) or BEIR JSONL; a file or a folder of shards.
        model: Model reference when `tuned_model` is not given: "default" (packaged MiniLM), a gs:// or
            local sentence-transformers folder, or a hub id (e.g. "google/embeddinggemma-300m").
        tuned_model: A Model artifact (fine_tune's output); wins over `model` when connected.
        previous_vectors: The `vectors` of an earlier run: documents whose content hash (formatted text +
            model + chunking) did not change are carried over instead of embedded again.
        evaluation_embeddings: An `evaluate` task's `corpus_embeddings`: the corpus documents evaluation
            already embedded with this model and document prompt are carried over instead of embedded
            again (whole documents and the torch backend only; a few are embedded again to check them).
            Not used when `previous_vectors` is connected: an earlier run's vectors win.
        task_type: Vertex task type; selects the document prompt (e.g. EmbeddingGemma's "title: ... | text: ").
        chunk_tokens: Split documents into chunks of this many tokens (0 = one vector per document).
        chunk_overlap: Tokens shared by neighbouring chunks; chunk ids are `docid#n`.
        max_dead_letter_share: The task fails after the job ran, with the counts, when more than this share
            of the records read became dead letters; no vectors are written then (1 = never).
        max_dead_letters: The same by count (-1 = no limit by count).
        batch_size: Texts per forward pass.
        output_dimensionality: Keep this many leading dimensions, re-normalised (0 = all).
        backend: "torch", or "onnx-int8" for CPU workers: the model is quantized to int8 when the job starts
            and run by ONNX Runtime (speed and SciFact NDCG@10 against fp32: benchmarks/README.md). Part of
            the content hash, so switching backends re-embeds everything.
        runner: "DirectRunner" (in this task's process; kfp.local) or "DataflowRunner".
        project: Dataflow project ("" = the project the task runs in).
        location: Dataflow region.
        temp_location: gs:// folder for Dataflow temp files ("" = beside the `vectors` artifact).
        service_account: Dataflow worker service account ("" = project default).
        network: VPC network of the workers.
        subnetwork: Subnetwork URL of the workers.
        machine_type: Worker machine type (e.g. "g2-standard-8" with L4 GPUs).
        max_workers: Autoscaling limit (0 = Dataflow default).
        accelerator_type: GPU per worker, e.g. "nvidia-l4" ("" = CPU workers); bf16 is used on GPUs.
        accelerator_count: GPUs per worker.
        kms_key: Cloud KMS key of the Dataflow job (`projects/P/locations/L/keyRings/R/cryptoKeys/K`; CMEK,
            Beam's `--dataflow_kms_key`; "" = Google-managed encryption).
        dataflow_image: Worker container image ("" = `embedpipe.images.DATAFLOW_IMAGE`, our Dataflow image
            of this version; decided when the task runs, since KFP copies only this function's source).

    Returns:
        vectors: Folder of Parquet shards `vectors-*.parquet`: `id`, `embedding` (list<float32>),
            `content`, `metadata` (JSON text; `document_id`, `chunk` for chunks), `content_hash`; records
            that could not be embedded are in `_dead_letters/` with the reason.
        metrics: documents_read, documents_embedded, chunks_embedded, documents_reused, vectors_reused,
            documents_removed, dead_letters, seconds, documents_per_second.
        gcp_resources: The Dataflow job (GCPC format), so Vertex links it and cancels it with the run.
    """
    arguments = dict(locals())  # every parameter, by name: the model and Dataflow ones become settings objects
    from embedpipe.embed.task import embed_corpus_task

    embed_corpus_task(**arguments)
