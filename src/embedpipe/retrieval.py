"""Exact top-k search by inner product (cosine on normalised vectors), in bounded memory.

Queries and corpus are both processed in chunks: for each block of queries, the corpus is scanned
block by block with one matrix product each, and only a running top-k per query is kept. Peak memory is
about `query_chunk × (corpus_chunk + k)` scores, whatever the corpus size, so 1 M documents × 10 k
queries never materialises the 10^10-entry score matrix. The corpus may be a numpy memmap.

Example:
    >>> import numpy as np
    >>> corpus = np.eye(4, dtype="float32")
    >>> scores, indices = top_k(corpus[[2, 0]], corpus, k=2)
    >>> indices[:, 0].tolist()
    [2, 0]
"""

from __future__ import annotations


def top_k(queries, corpus, k: int, *, query_chunk: int = 1024, corpus_chunk: int = 32768, device: str | None = None):
    """Returns (scores, indices) of the k highest inner products of each query with the corpus.

    Args:
        queries: (n_queries, dim) float array.
        corpus: (n_docs, dim) float array or memmap.
        k: How many neighbours per query (capped at the corpus size).
        query_chunk: Queries per block.
        corpus_chunk: Documents per block.
        device: torch device ("cuda" when available by default).

    Returns:
        Two numpy arrays of shape (n_queries, k): scores descending, and corpus row indices.
    """
    import numpy as np
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    n_docs, n_queries = len(corpus), len(queries)
    k = min(k, n_docs)

    def as_tensor(array):
        array = np.asarray(array, dtype=np.float32)
        # A read-only array (a memmap, a Parquet buffer) is copied; anything else is shared, not copied.
        return torch.from_numpy(array if array.flags.writeable else array.copy()).to(device)

    query_tensor = as_tensor(queries)
    best_scores = torch.full((n_queries, k), -float("inf"), device=device)
    best_indices = torch.zeros((n_queries, k), dtype=torch.int64, device=device)
    with torch.inference_mode():
        # The corpus is read once, block by block; every query block is scored against it and only the
        # running top-k per query is kept, so memory stays at one (query_chunk x corpus_chunk) block.
        for d_start in range(0, n_docs, corpus_chunk):
            block = as_tensor(corpus[d_start : d_start + corpus_chunk])
            block_k = min(k, len(block))
            for q_start in range(0, n_queries, query_chunk):
                rows = slice(q_start, q_start + query_chunk)
                scores = query_tensor[rows] @ block.T
                block_scores, block_indices = torch.topk(scores, block_k, dim=1, sorted=False)
                merged_scores = torch.cat([best_scores[rows], block_scores], dim=1)
                merged_indices = torch.cat([best_indices[rows], block_indices + d_start], dim=1)
                top_scores, order = torch.topk(merged_scores, k, dim=1, sorted=False)
                best_scores[rows] = top_scores
                best_indices[rows] = torch.gather(merged_indices, 1, order)
        best_scores, order = torch.sort(best_scores, dim=1, descending=True)
        best_indices = torch.gather(best_indices, 1, order)
    return best_scores.cpu().numpy(), best_indices.cpu().numpy()
