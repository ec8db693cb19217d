"""Loading vectors into PostgreSQL + pgvector: ours vs the naive path, same embedded database, runs alternated.

Scenarios (each run A B A B ..., --rounds rounds, medians and ratios):
  1. new table + HNSW index (cosine), end to end:
     A  ours: `PgVectorWriter.write` (binary COPY into the new table, HNSW built with maintenance_work_mem
        raised for the transaction), one transaction
     B  naive: `executemany` INSERT ... ON CONFLICT DO UPDATE into a table indexed afterwards, the HNSW
        index built with the server's default settings (maintenance_work_mem 64MB)
  2. upsert into an existing HNSW-indexed table of --rows rows: --upsert rows, half existing ids with new
     vectors, half new ids:
     A  ours: COPY into a staging table + one INSERT ... ON CONFLICT, one transaction
     B  naive: `executemany` INSERT ... ON CONFLICT DO UPDATE, one transaction

Random unit vectors (seeded). The last stdout line is one JSON object of the figures.

    python benchmarks/vector_upload.py [--rows 100000] [--dim 384] [--upsert 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import uuid

import numpy as np


def unit_rows(n: int, dim: int, seed: int, prefix: str = "d"):
    from embedpipe.vectorstore import VectorBatch

    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return VectorBatch(
        [f"{prefix}{i}" for i in range(n)],
        vectors,
        [f"document {i}" for i in range(n)],
        [json.dumps({"n": i}) for i in range(n)],
    )


def naive_insert(uri: str, table: str, batch, *, create: bool) -> None:
    import psycopg
    from pgvector.psycopg import register_vector

    with psycopg.connect(uri) as conn:
        register_vector(conn)
        if create:
            conn.execute(
                f"CREATE TABLE {table} (id TEXT PRIMARY KEY, embedding VECTOR({batch.dimension}), content TEXT, metadata JSONB)"
            )
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {table} (id, embedding, content, metadata) VALUES (%s, %s, %s, %s::jsonb) "
                "ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, content = EXCLUDED.content, metadata = EXCLUDED.metadata",
                list(batch.rows()),
            )
        conn.commit()
        if create:
            conn.execute(f"CREATE INDEX ON {table} USING hnsw (embedding vector_cosine_ops)")
            conn.commit()


def drop(uri: str, table: str) -> None:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--upsert", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--maintenance-work-mem", default="1GB")
    parser.add_argument("--skip-upsert", action="store_true")
    args = parser.parse_args(argv)

    from embedpipe.vectorstore import IndexSettings, PgVectorWriter
    from embedpipe.vectorstore.embedded import embedded_server

    folder = tempfile.mkdtemp(prefix="embedpipe-bench-")
    server = embedded_server(os.path.join(folder, "pg"), keep_running=False)
    uri = server.get_uri()
    index = IndexSettings(kind="hnsw", metric="cosine", maintenance_work_mem=args.maintenance_work_mem)
    batch = unit_rows(args.rows, args.dim, seed=0)
    times = {"new_ours": [], "new_naive": [], "upsert_ours": [], "upsert_naive": []}
    try:
        for round_ in range(args.rounds):
            for who in ("ours", "naive"):
                table = f"bench_{who}_{uuid.uuid4().hex[:6]}"
                started = time.perf_counter()
                if who == "ours":
                    PgVectorWriter(uri, table, index=index).write(batch)
                else:
                    naive_insert(uri, table, batch, create=True)
                times[f"new_{who}"].append(time.perf_counter() - started)
                print(f"round {round_ + 1} new table + HNSW  {who:<5} {times[f'new_{who}'][-1]:8.2f} s", flush=True)
                drop(uri, table)
        if not args.skip_upsert:
            base = "bench_existing"
            PgVectorWriter(uri, base, index=index).write(batch)
            for round_ in range(args.rounds):
                for who in ("ours", "naive"):
                    half = args.upsert // 2
                    seed = 1000 + 2 * round_ + (who == "naive")
                    existing = unit_rows(half, args.dim, seed=seed)  # same ids d0.., new vectors
                    new = unit_rows(args.upsert - half, args.dim, seed=seed + 500, prefix=f"r{seed}_")
                    from embedpipe.vectorstore import VectorBatch

                    upsert = VectorBatch.concat([existing, new])
                    started = time.perf_counter()
                    if who == "ours":
                        PgVectorWriter(uri, base, index=index).write(upsert)
                    else:
                        naive_insert(uri, base, upsert, create=False)
                    times[f"upsert_{who}"].append(time.perf_counter() - started)
                    print(
                        f"round {round_ + 1} upsert {args.upsert} rows into indexed table  {who:<5} {times[f'upsert_{who}'][-1]:8.2f} s",
                        flush=True,
                    )
    finally:
        server.cleanup()  # stops it (once; the atexit hook then has nothing left to do)

    medians = {name: round(statistics.median(values), 3) for name, values in times.items() if values}
    result = {
        "benchmark": "vector_upload",
        "rows": args.rows,
        "dim": args.dim,
        "upsert_rows": args.upsert,
        "rounds": args.rounds,
        "maintenance_work_mem": args.maintenance_work_mem,
        "median_seconds": medians,
        "new_table_speedup": round(medians["new_naive"] / medians["new_ours"], 2),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
    }
    if "upsert_ours" in medians:
        result["upsert_speedup"] = round(medians["upsert_naive"] / medians["upsert_ours"], 2)
    print(
        f"\nmedians: {medians}\nnew table + HNSW: ours {result['new_table_speedup']}x faster"
        + (f"; upsert into indexed table: ours {result['upsert_speedup']}x" if "upsert_speedup" in result else "")
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
