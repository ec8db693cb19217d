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
#: The first pgvector release with `hnsw.iterative_scan`.
ITERATIVE_SCAN_SINCE = (0, 8, 0)


@dataclass(frozen=True)
class ScanSettings:
    """Index scan settings of one search (None = the server's).

    Attributes:
        ef_search: HNSW candidate list size (pgvector's default 40).
        iterative_scan: With a filter: "relaxed_order" (default; results re-sorted by the caller),
            "strict_order", or "off" (post-filtering of `ef_search` candidates only).
        max_scan_tuples: With an iterative scan, the most index tuples visited (pgvector's 20,000).
    """

    ef_search: int | None = None
    iterative_scan: str = "relaxed_order"
    max_scan_tuples: int | None = None

    def check(self) -> ScanSettings:
        if self.iterative_scan not in ITERATIVE_SCANS:
            raise ValueError(f"iterative_scan {self.iterative_scan!r} is not one of {ITERATIVE_SCANS}")
        for name in ("ef_search", "max_scan_tuples"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.ef_search is not None and self.ef_search > 1000:
            raise ValueError(f"ef_search {self.ef_search} is above pgvector's maximum, 1000")
        return self


def pgvector_version(session: Session) -> tuple[int, ...]:
    """The installed pgvector extension's version, e.g. (0, 8, 5); () when it is not installed."""
    rows = session.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    if not rows:
        return ()
    return tuple(int(part) for part in str(rows[0][0]).split(".") if part.isdigit())


def apply_scan_settings(session: Session, settings: ScanSettings, *, filtered: bool) -> bool:
    """SET LOCAL the settings for this transaction; returns whether an iterative scan is on."""
    if settings.ef_search:
        session.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(int(settings.ef_search)),))
    if not filtered or settings.iterative_scan == "off":
        return False
    if pgvector_version(session) < ITERATIVE_SCAN_SINCE:
        return False  # an older pgvector: post-filtering only (fewer than k rows for a selective filter)
    session.execute("SELECT set_config('hnsw.iterative_scan', %s, true)", (settings.iterative_scan,))
    if settings.max_scan_tuples:
        session.execute("SELECT set_config('hnsw.max_scan_tuples', %s, true)", (str(int(settings.max_scan_tuples)),))
    return True
