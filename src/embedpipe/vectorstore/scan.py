"""How an HNSW search scans when a filter drops most candidates: pgvector's iterative index scan.

An HNSW index scan returns the `ef_search` nearest candidates; a `WHERE` applied after it keeps only
those that match, so a filter keeping 10 % of the rows leaves about 4 of 40 and the query returns
fewer than k rows (lost recall). pgvector 0.8 added iterative scans: the index goes on producing
candidates until k rows pass the filter or `hnsw.max_scan_tuples` were visited. The settings are
SET LOCAL (this transaction only), and only where the extension is new enough to know them
(`SELECT extversion FROM pg_extension`). Figures: benchmarks/README.md (search_filtered).
"""

from __future__ import annotations

from dataclasses import dataclass

from embedpipe.vectorstore.sessions import Session

ITERATIVE_SCANS = ("relaxed_order", "strict_order", "off")
#: ef_search of an iterative scan with a filter unless set (see ScanSettings.filtered_ef_search).
FILTERED_EF_SEARCH = 200
#: The first pgvector release with `hnsw.iterative_scan`.
ITERATIVE_SCAN_SINCE = (0, 8, 0)


@dataclass(frozen=True)
class ScanSettings:
    """Index scan settings of one search (None = the server's).

    Attributes:
        ef_search: HNSW candidate list size (pgvector's default 40), with or without a filter.
        iterative_scan: With a filter: "relaxed_order" (default; results re-sorted by the caller),
            "strict_order", or "off" (post-filtering of `ef_search` candidates only).
        max_scan_tuples: With an iterative scan, the most index tuples visited (pgvector's 20,000).
        filtered_ef_search: The candidate list size of an iterative scan with a filter when
            `ef_search` is None: 200, where pgvector's 40 leaves recall@10 at ~0.92 for a filter that
            keeps 10 % of 100k rows and 200 reaches ~0.97 for about the same time (benchmarks/README.md,
            search_filtered). None = the server's.
    """

    ef_search: int | None = None
    iterative_scan: str = "relaxed_order"
    max_scan_tuples: int | None = None
    filtered_ef_search: int | None = FILTERED_EF_SEARCH

    def check(self) -> ScanSettings:
        if self.iterative_scan not in ITERATIVE_SCANS:
            raise ValueError(f"iterative_scan {self.iterative_scan!r} is not one of {ITERATIVE_SCANS}")
        for name in ("ef_search", "max_scan_tuples", "filtered_ef_search"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("ef_search", "filtered_ef_search"):
            if (getattr(self, name) or 0) > 1000:
                raise ValueError(f"{name} {getattr(self, name)} is above pgvector's maximum, 1000")
        return self


def pgvector_version(session: Session) -> tuple[int, ...]:
    """The installed pgvector extension's version, e.g. (0, 8, 5); () when it is not installed."""
    rows = session.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    if not rows:
        return ()
    return tuple(int(part) for part in str(rows[0][0]).split(".") if part.isdigit())


def apply_scan_settings(session: Session, settings: ScanSettings, *, filtered: bool) -> bool:
    """SET LOCAL the settings for this transaction; returns whether an iterative scan is on."""
    iterative = (
        filtered and settings.iterative_scan != "off" and pgvector_version(session) >= ITERATIVE_SCAN_SINCE
    )  # an older pgvector: post-filtering only (fewer than k rows for a selective filter)
    ef_search = settings.ef_search or (settings.filtered_ef_search if iterative else None)
    if ef_search:
        session.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(int(ef_search)),))
    if not iterative:
        return False
    session.execute("SELECT set_config('hnsw.iterative_scan', %s, true)", (settings.iterative_scan,))
    if settings.max_scan_tuples:
        session.execute("SELECT set_config('hnsw.max_scan_tuples', %s, true)", (str(int(settings.max_scan_tuples)),))
    return True
