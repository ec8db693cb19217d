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


def top_k(queries, corpus, k: int, *, query_chunk: int = 1024, corpus_chunk: int = 65536, device: str | None = None):
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
    n_docs = len(corpus)
    k = min(k, n_docs)
    all_scores = np.empty((len(queries), k), dtype=np.float32)
    all_indices = np.empty((len(queries), k), dtype=np.int64)
    with torch.inference_mode():
        for q_start in range(0, len(queries), query_chunk):
            q = torch.tensor(np.asarray(queries[q_start : q_start + query_chunk], dtype=np.float32), device=device)
            best_scores = torch.full((len(q), k), -float("inf"), device=device)
            best_indices = torch.zeros((len(q), k), dtype=torch.int64, device=device)
            for d_start in range(0, n_docs, corpus_chunk):
                block = torch.tensor(np.asarray(corpus[d_start : d_start + corpus_chunk], dtype=np.float32), device=device)
                scores = q @ block.T
                block_k = min(k, scores.shape[1])
                block_scores, block_indices = torch.topk(scores, block_k, dim=1)
                merged_scores = torch.cat([best_scores, block_scores], dim=1)
                merged_indices = torch.cat([best_indices, block_indices + d_start], dim=1)
                best_scores, order = torch.topk(merged_scores, k, dim=1)
                best_indices = torch.gather(merged_indices, 1, order)
                del scores, block
            all_scores[q_start : q_start + len(q)] = best_scores.cpu().numpy()
            all_indices[q_start : q_start + len(q)] = best_indices.cpu().numpy()
    return all_scores, all_indices
