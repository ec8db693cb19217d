"""embedpipe's KFP components, in pipeline order.

Each is a lightweight Python component whose `base_image` is the embedpipe image of this package's
version, with no `packages_to_install`: the same definition runs under `kfp.local` and on Vertex AI.

1. prepare_data: validate BEIR-style inputs, split labels by query, write Parquet datasets.
2. evaluate: NDCG@10 etc. of the base and tuned model on a labelled split; the quality gate.
3. package_for_serving: describe the tuned model as a Vertex serving container (then GCPC registers it).
4. embed_corpus: embed a corpus with a Beam job (local runner or Dataflow with GPUs) into Parquet vectors.
"""

from embedpipe.components.embed_corpus.component import embed_corpus
from embedpipe.components.evaluate.component import evaluate
from embedpipe.components.package_for_serving.component import package_for_serving
from embedpipe.components.prepare_data.component import prepare_data

PrepareDataOp = prepare_data
EvaluateOp = evaluate
PackageForServingOp = package_for_serving
EmbedCorpusOp = embed_corpus

__all__ = [
    "prepare_data",
    "PrepareDataOp",
    "evaluate",
    "EvaluateOp",
    "package_for_serving",
    "PackageForServingOp",
    "embed_corpus",
    "EmbedCorpusOp",
]
