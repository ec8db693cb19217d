"""Is a difference between two models over the same queries more than chance? A paired randomization test.

The test IR evaluations use (Smucker, Allan and Carterette 2007, "A comparison of statistical significance
tests for information retrieval evaluation"): under the null hypothesis the two models are exchangeable on
each query, so each per-query difference is as likely to have the other sign. The p-value is the share of
random sign assignments whose mean difference is at least as far from 0 as the observed one (two-sided).

Example:
    >>> p = paired_randomization_test([0.5, 0.6, 0.7, 0.8], [0.6, 0.7, 0.8, 0.9])
    >>> round(p, 2)  # 4 queries, all +0.1: 2 of the 16 sign patterns are as extreme
    0.12
"""

from __future__ import annotations

from collections.abc import Sequence

#: Random sign assignments drawn when there are too many queries to enumerate them all.
RESAMPLES = 10_000
#: Up to this many non-zero differences, every sign assignment is enumerated: the p-value is exact.
EXACT_UP_TO = 16
#: What the report says about the test.
DESCRIPTION = (
    "two-sided paired randomization test over queries (signs of the per-query differences flipped at random, "
    f"{RESAMPLES:,} resamples, exact up to {EXACT_UP_TO} differing queries)"
)


def paired_randomization_test(
    first: Sequence[float], second: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0
) -> float:
    """The two-sided p-value of the mean of `second - first` over paired per-query values.

    Queries where the two are equal do not change the statistic's distribution; with no differing query
    at all the p-value is 1. Up to EXACT_UP_TO differing queries every sign assignment is counted (exact);
    beyond, `resamples` random ones are, and the observed assignment is counted as one of them, so the
    p-value is never 0.

    Args:
        first: The first model's value per query.
        second: The second model's value per query, same order.
        resamples: Random sign assignments to draw (beyond EXACT_UP_TO).
        seed: Seed of the random signs: the same inputs give the same p-value.

    Returns:
        The p-value, in (0, 1].
    """
    import numpy as np

    if len(first) != len(second):
        raise ValueError(f"paired values: {len(first)} first vs {len(second)} second")
    differences = np.asarray(second, dtype=np.float64) - np.asarray(first, dtype=np.float64)
    differences = differences[np.abs(differences) > 1e-12]
    n = len(differences)
    if n == 0:
        return 1.0
    observed = abs(differences.sum())
    tolerance = 1e-9 * max(1.0, observed)  # sums of the same numbers in another order may differ in the last bits
    if n <= EXACT_UP_TO:
        patterns = np.arange(2**n)[:, None] >> np.arange(n)[None, :] & 1
        sums = np.abs((1 - 2 * patterns) @ differences)
        return float((sums >= observed - tolerance).mean())
    generator = np.random.default_rng(seed)
    extreme = 0
    chunk = max(1, 4_000_000 // n)  # about 32 MB of signs at a time, whatever the number of queries
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        signs = generator.integers(0, 2, size=(size, n), dtype=np.int8) * 2 - 1
        extreme += int((np.abs(signs @ differences) >= observed - tolerance).sum())
    return (extreme + 1) / (resamples + 1)
