"""embedpipe's KFP components, in pipeline order.

Each is a lightweight Python component whose `base_image` is the embedpipe image of this package's
version, with no `packages_to_install`: the same definition runs under `kfp.local` and on Vertex AI.

1. prepare_data: validate BEIR-style inputs, split labels by query, write Parquet datasets.
2. fine_tune: fine-tune the base model on the train labels (GPU on Vertex), with Vertex's parameters.
3. evaluate: NDCG@10 etc. of the base and tuned model on a labelled split; the quality gate.
4. package_for_serving: describe the tuned model as a Vertex serving container (then GCPC registers it).
5. embed_corpus: embed a corpus with a Beam job (local runner or Dataflow with GPUs) into Parquet vectors.
6. upload_vectors: write the vectors into pgvector (embedded/AlloyDB/Cloud SQL), BigQuery or Vector Search.
- embed_stream: the streaming job (Pub/Sub changes into pgvector) launched on Dataflow, or run on a file locally.
- select_corpus: the corpus to index (another one by path, or the prepared one).
- quality_gate_failed: stop the run with a clear message when the tuned model is not better.
"""

from embedpipe.components.embed_corpus.component import embed_corpus
from embedpipe.components.embed_stream.component import embed_stream
from embedpipe.components.evaluate.component import evaluate
from embedpipe.components.fine_tune.component import fine_tune
from embedpipe.components.package_for_serving.component import package_for_serving
from embedpipe.components.prepare_data.component import prepare_data
from embedpipe.components.quality_gate_failed.component import quality_gate_failed
from embedpipe.components.select_corpus.component import select_corpus
from embedpipe.components.upload_vectors.component import upload_vectors

PrepareDataOp = prepare_data
EvaluateOp = evaluate
FineTuneOp = fine_tune
PackageForServingOp = package_for_serving
EmbedCorpusOp = embed_corpus
EmbedStreamOp = embed_stream
UploadVectorsOp = upload_vectors
SelectCorpusOp = select_corpus
QualityGateFailedOp = quality_gate_failed

__all__ = [
    "prepare_data",
    "PrepareDataOp",
    "fine_tune",
    "FineTuneOp",
    "evaluate",
    "EvaluateOp",
    "package_for_serving",
    "PackageForServingOp",
    "embed_corpus",
    "EmbedCorpusOp",
    "embed_stream",
    "EmbedStreamOp",
    "select_corpus",
    "SelectCorpusOp",
    "quality_gate_failed",
    "QualityGateFailedOp",
    "upload_vectors",
    "UploadVectorsOp",
]
