"""A killed upsert's re-run vs a fresh load, same embedded database, runs alternated A B A B ...

  A  fresh load: `PgVectorWriter.write` of --rows rows into a new table (binary COPY + HNSW build).
  B  recovery: an existing HNSW-indexed table of --rows rows; an upsert of --rows rows (the same ids, new
     vectors) runs in a separate process that is killed with SIGKILL part-way (--kill-after seconds after
     its INSERT starts); the same upsert is then run again at once and timed (the re-run is B's figure).

Random unit vectors of --dim dimensions (MiniLM's 384 by default, seeded); no model. The existing table
of B is built once and reused by every round (each round upserts new vectors). Medians, the ratio B / A,
and one JSON object on the last stdout line. Figures: benchmarks/README.md.

    python benchmarks/upsert_recovery.py [--rows 60000] [--dim 384] [--rounds 3] [--kill-after 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np

CHILD = """
import sys
sys.path.insert(0, sys.argv[5])
from upsert_recovery import unit_rows
from embedpipe.vectorstore import PgVectorWriter
batch = unit_rows(int(sys.argv[3]), int(sys.argv[4]), seed=int(sys.argv[6]))
print("ready", flush=True)
PgVectorWriter(sys.argv[1], sys.argv[2]).write(batch)
print("finished", flush=True)
"""
BUSY = (
    "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND state = 'active'"
    " AND (query LIKE 'WITH written%%' OR query LIKE 'INSERT INTO%%' OR query LIKE 'CREATE INDEX%%')"
)


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


def killed_upsert(uri: str, table: str, rows: int, dim: int, seed: int, kill_after: float) -> tuple[float, bool]:
    """Starts the upsert in a child process, SIGKILLs it `kill_after` s into its INSERT (or index build).

    Returns:
        (seconds from the INSERT's start to the kill, whether the server was still running it then).
    """
    import psycopg

    here = os.path.dirname(os.path.abspath(__file__))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, uri, table, str(rows), str(dim), here, str(seed)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the upsert process did not start")
        started = time.perf_counter()
        with psycopg.connect(uri, autocommit=True) as admin:
            while not admin.execute(BUSY).fetchone()[0]:
                if child.poll() is not None:
                    raise RuntimeError("the upsert finished before it could be killed: raise --rows")
                time.sleep(0.01)
            time.sleep(kill_after)
            if child.poll() is not None:
                raise RuntimeError("the upsert finished before it could be killed: lower --kill-after")
            os.kill(child.pid, signal.SIGKILL)
            child.wait(30)
            # the re-run starts at once, as a retrying pipeline would: the killed statement may still be
            # running on the server (it has not noticed its client is gone) and hold its row locks
            still_running = bool(admin.execute(BUSY).fetchone()[0])
        return time.perf_counter() - started, still_running
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def drop(uri: str, table: str) -> None:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kill-after", type=float, default=3.0)
    args = parser.parse_args(argv)

    from embedpipe.vectorstore import PgVectorWriter
    from embedpipe.vectorstore.embedded import embedded_server

    folder = tempfile.mkdtemp(prefix="embedpipe-bench-")
    server = embedded_server(os.path.join(folder, "pg"), keep_running=False)
    uri = server.get_uri()
    fresh = unit_rows(args.rows, args.dim, seed=0)
    times: dict[str, list[float]] = {"fresh_load": [], "rerun_after_kill": [], "killed_after": []}
    details = []
    try:
        existing = "bench_existing"
        PgVectorWriter(uri, existing).write(unit_rows(args.rows, args.dim, seed=1))
        for round_ in range(args.rounds):
            table = f"bench_fresh_{uuid.uuid4().hex[:6]}"
            started = time.perf_counter()
            PgVectorWriter(uri, table).write(fresh)
            times["fresh_load"].append(time.perf_counter() - started)
            drop(uri, table)
            print(f"round {round_ + 1} A fresh load        {times['fresh_load'][-1]:8.2f} s", flush=True)

            seed = 100 + round_
            upsert = unit_rows(args.rows, args.dim, seed=seed)
            killed_after, orphan = killed_upsert(uri, existing, args.rows, args.dim, seed, args.kill_after)
            times["killed_after"].append(killed_after)
            started = time.perf_counter()
            result = PgVectorWriter(uri, existing).write(upsert)
            times["rerun_after_kill"].append(time.perf_counter() - started)
            details.append(result.metrics() | {"index_built": result.index_built, "killed_still_running": orphan})
            print(
                f"round {round_ + 1} B re-run after kill {times['rerun_after_kill'][-1]:8.2f} s "
                f"(killed {killed_after:.1f} s into the upsert, server still running it: {orphan}; "
                f"{result.updated} updated)",
                flush=True,
            )
    finally:
        server.cleanup()

    medians = {name: round(statistics.median(values), 3) for name, values in times.items()}
    result = {
        "benchmark": "upsert_recovery",
        "rows": args.rows,
        "dim": args.dim,
        "rounds": args.rounds,
        "kill_after": args.kill_after,
        "seconds": {name: [round(v, 2) for v in values] for name, values in times.items()},
        "median_seconds": medians,
        "rerun_over_fresh": round(medians["rerun_after_kill"] / medians["fresh_load"], 2),
        "rerun_writes": details,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
    }
    print(f"\nmedians: {medians}\nre-run after a killed upsert / fresh load: {result['rerun_over_fresh']}x")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
