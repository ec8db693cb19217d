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
    if len(first) != len(second):
        raise ValueError(f"paired values: {len(first)} first vs {len(second)} second")
    return paired_randomization_tests([[v] for v in first], [[v] for v in second], resamples=resamples, seed=seed)[0]


def paired_randomization_tests(first, second, *, resamples: int = RESAMPLES, seed: int = 0) -> list[float]:
    """`paired_randomization_test` of several metrics at once: one column per metric, one row per query.

    The random sign assignments are drawn once for all columns (the same ones a single column would get),
    so a report's 17 metrics cost about what one does.

    Args:
        first: (queries x metrics) values of the first model.
        second: The same of the second model.
        resamples: Random sign assignments to draw (for columns with more than EXACT_UP_TO differences).
        seed: Seed of the random signs.

    Returns:
        One p-value per column.
    """
    import numpy as np

    differences = np.asarray(second, dtype=np.float64) - np.asarray(first, dtype=np.float64)
    if differences.ndim != 2:
        raise ValueError(f"paired values: expected a (queries x metrics) table, got shape {differences.shape}")
    differences[np.abs(differences) <= 1e-9] = 0.0  # float noise is no difference (as the report counts "same")
    observed = np.abs(differences.sum(axis=0))
    # Sums of the same numbers in another order may differ in their last bits.
    tolerance = 1e-9 * np.maximum(1.0, observed)
    p_values = [1.0] * differences.shape[1]
    sampled = []
    for column in range(differences.shape[1]):
        values = differences[differences[:, column] != 0, column]
        if len(values) > EXACT_UP_TO:
            sampled.append(column)
        elif len(values):
            patterns = np.arange(2 ** len(values))[:, None] >> np.arange(len(values))[None, :] & 1
            sums = np.abs((1 - 2 * patterns) @ values)
            p_values[column] = float((sums >= observed[column] - tolerance[column]).mean())
    if sampled:
        table, n = differences[:, sampled], differences.shape[0]
        generator = np.random.default_rng(seed)
        extreme = np.zeros(len(sampled), dtype=np.int64)
        chunk = max(1, 4_000_000 // n)  # about 32 MB of signs at a time, whatever the number of queries
        for start in range(0, resamples, chunk):
            size = min(chunk, resamples - start)
            signs = generator.integers(0, 2, size=(size, n), dtype=np.int8) * 2 - 1
            extreme += (np.abs(signs @ table) >= observed[sampled] - tolerance[sampled]).sum(axis=0)
        for column, count in zip(sampled, extreme):
            p_values[column] = (int(count) + 1) / (resamples + 1)
    return p_values
