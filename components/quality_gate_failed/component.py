"""quality_gate_failed: stop the pipeline with a clear message when the tuned model is not better."""

from kfp import dsl

from embedpipe.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def quality_gate_failed(base_ndcg_at_10: float, tuned_ndcg_at_10: float, margin: float):
    """Fails the run, saying by how much the tuned model missed the gate; the evaluation reports stay.

    Args:
        base_ndcg_at_10: The base model's NDCG@10.
        tuned_ndcg_at_10: The tuned model's NDCG@10.
        margin: The margin the tuned model had to beat the base model by.
    """
    from embedpipe.evaluate import Comparison, QualityGateError

    raise QualityGateError(Comparison(base_ndcg_at_10, tuned_ndcg_at_10, margin))
