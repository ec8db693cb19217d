"""embedpipe's KFP components, in pipeline order.

Each is a lightweight Python component whose `base_image` is the embedpipe image of this package's
version, with no `packages_to_install`: the same definition runs under `kfp.local` and on Vertex AI.

1. prepare_data: validate BEIR-style inputs, split labels by query, write Parquet datasets.
"""

from embedpipe.components.prepare_data.component import prepare_data

PrepareDataOp = prepare_data

__all__ = ["prepare_data", "PrepareDataOp"]
