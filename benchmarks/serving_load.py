"""Load check of the serving endpoint: N concurrent clients for a bounded time on loopback.

Contenders, alternated A M B A M B ... (--rounds each):
  A  `embedpipe serve` (a separate process, real HTTP, one instance per request) under N clients
  M  the same, with --bad-percent (1 %) of the requests malformed, of several kinds (`MALFORMED`: broken
     JSON, a lone surrogate, bytes that are not UTF-8, deep nesting, a huge number, too many characters,
     a body over the limit, a text too long with autoTruncate false); the figures are the valid requests'
  B  the same requests encoded in-process with `SentenceTransformer.encode`, one after another
     (what a single caller gets without a server: the ceiling the server's overhead is measured against)

Prints requests/s, p50/p99 latency and errors per round, medians, the A/B throughput ratio and the M/A p99
ratio; the last line is one JSON object of the figures. Exits 1 on any 5xx, a wrong answer to a valid
request, or a malformed one not answered 4xx.

    python benchmarks/serving_load.py [--clients 8] [--seconds 10] [--rounds 3] [--bad-percent 1]
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUERIES = REPO / "examples" / "scifact-mini" / "queries.jsonl"

#: Malformed bodies (name -> bytes), each answered 4xx; sent in turn among the valid requests of run M.
MALFORMED = {
    "broken JSON": b'{"instances": [{"content": "a"}',
    "lone surrogate": b'{"instances": [{"content": "what is \\ud800 pgvector?"}]}',
    "not UTF-8": b'{"instances": [{"content": "caf\xe9"}]}',
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "huge number": b'{"instances": [{"content": "a"}], "parameters": {"outputDimensionality": ' + b"9" * 5000 + b"}}",
    "too many characters": json.dumps({"instances": [{"content": "word " * 20_001}]}).encode(),
    "body over the limit": json.dumps({"instances": [{"content": "w " * 400_000}] * 2}).encode(),
    "too long, autoTruncate false": json.dumps(
        {"instances": [{"content": "word " * 400}], "parameters": {"autoTruncate": False}}
    ).encode(),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summarise(latencies: list[float], wall: float, errors: int = 0, samples: list[str] | None = None, **extra) -> dict:
    return {
        "requests_per_s": len(latencies) / wall,
        "p50_ms": 1000 * percentile(latencies, 0.5),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "requests": len(latencies),
        "errors": errors,
        "error_samples": samples or [],
        **extra,
    }


#: One sequence number per malformed request over all rounds, so the kinds take turns across rounds.
MALFORMED_SENT = itertools.count()


def load_round(port: int, texts: list[str], clients: int, seconds: float, bad_percent: float = 0.0) -> dict:
    """N clients on keep-alive connections for `seconds`; every (100 / bad_percent)-th request is malformed.

    Returns the valid requests' throughput and latencies; `errors` counts valid requests not answered 200
    with values, malformed ones not answered 4xx, and every 5xx (`server_errors` counts the 5xx alone).
    """
    latencies: list[float] = []
    errors = [0]
    server_errors = [0]
    malformed: dict[str, int] = {}
    samples: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    bad_every = round(100 / bad_percent) if bad_percent else 0
    kinds = sorted(MALFORMED)
    counter = iter(range(10**9))  # next() on it is atomic under the GIL: one sequence number per request

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = offset
        while time.monotonic() < stop_at:
            number = next(counter)
            kind = kinds[next(MALFORMED_SENT) % len(kinds)] if bad_every and number % bad_every == 0 else None
            if kind is None:
                body = json.dumps({"instances": [{"content": texts[i % len(texts)]}]}).encode()
            else:
                body = MALFORMED[kind]
            started = time.perf_counter()
            status = 0
            try:
                connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
                status = response.status
                if kind is None:
                    ok = status == 200 and b'"values"' in payload
                else:
                    ok = 400 <= status < 500 and b'"error"' in payload
                reason = f"{kind or 'valid'}: HTTP {status}: {payload[:200]!r}"
                if response.will_close:
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            except (OSError, http.client.HTTPException) as err:
                ok, reason = False, f"{kind or 'valid'}: {err!r}"
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            elapsed = time.perf_counter() - started
            with lock:
                if kind is not None:
                    malformed[kind] = malformed.get(kind, 0) + 1
                elif ok:
                    latencies.append(elapsed)
                if status >= 500:
                    server_errors[0] += 1
                if not ok:
                    errors[0] += 1
                    if len(samples) < 3:
                        samples.append(reason)
            i += clients
        connection.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    return summarise(latencies, wall, errors[0], samples, server_errors=server_errors[0], malformed=malformed)


def malformed_costs(port: int, repeats: int = 5) -> dict:
    """Median milliseconds to answer each malformed kind alone (one request at a time, fresh connections)."""
    costs = {}
    for kind, body in sorted(MALFORMED.items()):
        times = []
        for _ in range(repeats):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            started = time.perf_counter()
            connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            times.append(time.perf_counter() - started)
            connection.close()
            assert 400 <= response.status < 500, (kind, response.status)
        costs[kind] = round(1000 * statistics.median(times), 1)
    return costs


def direct_round(model, texts: list[str], seconds: float) -> dict:
    from embedpipe.models import encode

    latencies = []
    stop_at = time.monotonic() + seconds
    started = time.monotonic()
    i = 0
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        encode(model, [texts[i % len(texts)]])
        latencies.append(time.perf_counter() - t0)
        i += 1
    return summarise(latencies, time.monotonic() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bad-percent", type=float, default=1.0, help="malformed requests in run M, in %%")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = [json.loads(line)["text"] for line in QUERIES.read_text().splitlines() if line.strip()]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "embedpipe.cli", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not become healthy")
            time.sleep(0.2)

        from embedpipe.models import load_model

        model = load_model("default", device="cpu")
        costs = malformed_costs(port)
        print("malformed requests alone (median ms): " + ", ".join(f"{k} {v}" for k, v in costs.items()), flush=True)
        results = {"server": [], "mixed": [], "direct": []}
        for r in range(args.rounds):
            a = load_round(port, texts, args.clients, args.seconds)
            results["server"].append(a)
            print(
                f"round {r + 1} A server  {a['requests_per_s']:.1f} req/s  p50 {a['p50_ms']:.1f} ms  p99 {a['p99_ms']:.1f} ms  errors {a['errors']} {a['error_samples'] or ''}",
                flush=True,
            )
            m = load_round(port, texts, args.clients, args.seconds, args.bad_percent)
            results["mixed"].append(m)
            print(
                f"round {r + 1} M mixed   {m['requests_per_s']:.1f} valid req/s  p50 {m['p50_ms']:.1f} ms  p99 {m['p99_ms']:.1f} ms  5xx {m['server_errors']}  errors {m['errors']}  malformed sent {sum(m['malformed'].values())} {m['error_samples'] or ''}",
                flush=True,
            )
            b = direct_round(model, texts, args.seconds)
            results["direct"].append(b)
            print(
                f"round {r + 1} B direct  {b['requests_per_s']:.1f} req/s  p50 {b['p50_ms']:.1f} ms  p99 {b['p99_ms']:.1f} ms",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(timeout=30)

    def median(name, key):
        return statistics.median(x[key] for x in results[name])

    figures = {
        "benchmark": "serving_load",
        "clients": args.clients,
        "seconds_per_round": args.seconds,
        "rounds": args.rounds,
        "server_requests_per_s": round(median("server", "requests_per_s"), 1),
        "server_p50_ms": round(median("server", "p50_ms"), 1),
        "server_p99_ms": round(median("server", "p99_ms"), 1),
        "server_errors": sum(x["errors"] for x in results["server"]),
        "bad_percent": args.bad_percent,
        "mixed_requests_per_s": round(median("mixed", "requests_per_s"), 1),
        "mixed_p50_ms": round(median("mixed", "p50_ms"), 1),
        "mixed_p99_ms": round(median("mixed", "p99_ms"), 1),
        "mixed_5xx": sum(x["server_errors"] for x in results["mixed"]),
        "mixed_errors": sum(x["errors"] for x in results["mixed"]),
        "mixed_malformed_sent": sum(sum(x["malformed"].values()) for x in results["mixed"]),
        "mixed_malformed_kinds": len(set().union(*(x["malformed"] for x in results["mixed"]))),
        # each round's M against the A just before it: the pairs share the machine's load at the time
        "mixed_vs_clean_p99_paired": round(
            statistics.median(m["p99_ms"] / a["p99_ms"] for a, m in zip(results["server"], results["mixed"])), 2
        ),
        "malformed_alone_ms": costs,
        "direct_requests_per_s": round(median("direct", "requests_per_s"), 1),
        "direct_p50_ms": round(median("direct", "p50_ms"), 1),
    }
    figures["server_vs_direct_throughput"] = round(
        figures["server_requests_per_s"] / figures["direct_requests_per_s"], 2
    )
    figures["mixed_vs_clean_p99"] = round(figures["mixed_p99_ms"] / figures["server_p99_ms"], 2)
    print(
        f"medians: server {figures['server_requests_per_s']} req/s (p50 {figures['server_p50_ms']} ms, p99 "
        f"{figures['server_p99_ms']} ms, {figures['server_errors']} errors) vs direct {figures['direct_requests_per_s']} req/s "
        f"-> ratio {figures['server_vs_direct_throughput']}"
    )
    print(
        f"mixed ({args.bad_percent} % malformed): valid p99 {figures['mixed_p99_ms']} ms vs clean "
        f"{figures['server_p99_ms']} ms -> {figures['mixed_vs_clean_p99']}x (paired by round "
        f"{figures['mixed_vs_clean_p99_paired']}x); {figures['mixed_5xx']} 5xx, "
        f"{figures['mixed_malformed_sent']} malformed sent ({figures['mixed_malformed_kinds']} kinds)"
    )
    print(json.dumps(figures))
    return 0 if figures["server_errors"] == 0 and figures["mixed_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
