"""select_corpus: the corpus to index: another one given by path, or the prepared labelled corpus."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from embedpipe.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def select_corpus(prepared_corpus: Input[Dataset], corpus: Output[Dataset], index_corpus_path: str = ""):
    """Points `corpus` at `index_corpus_path` when given (JSONL/Parquet, local or gs://), else at the prepared corpus.

    Nothing is copied: the output artifact's URI is set, so a large corpus is read once, by the embedding job.

    Args:
        prepared_corpus: prepare_data's corpus (the labelled one).
        index_corpus_path: Another corpus to index ("" = the prepared corpus).

    Returns:
        corpus: The corpus embed_corpus reads.
    """
    from embedpipe.storage import exists

    if index_corpus_path and not exists(index_corpus_path):
        raise FileNotFoundError(f"index_corpus_path {index_corpus_path}: no such file or folder")
    corpus.uri = index_corpus_path or prepared_corpus.uri
