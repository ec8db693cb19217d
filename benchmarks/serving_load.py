"""Load check of the serving endpoint: N concurrent clients for a bounded time on loopback.

Contenders, alternated A B A B ... (--rounds each):
  A  `embedpipe serve` (a separate process, real HTTP, one instance per request) under N clients
  B  the same requests encoded in-process with `SentenceTransformer.encode`, one after another
     (what a single caller gets without a server: the ceiling the server's overhead is measured against)

Prints requests/s, p50/p99 latency and errors per round, medians, and the A/B throughput ratio; the last
line is one JSON object of the figures.

    python benchmarks/serving_load.py [--clients 8] [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summarise(latencies: list[float], wall: float, errors: int = 0, samples: list[str] | None = None) -> dict:
    return {
        "requests_per_s": len(latencies) / wall,
        "p50_ms": 1000 * percentile(latencies, 0.5),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "requests": len(latencies),
        "errors": errors,
        "error_samples": samples or [],
    }


def load_round(port: int, texts: list[str], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = [0]
    samples: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = offset
        while time.monotonic() < stop_at:
            body = json.dumps({"instances": [{"content": texts[i % len(texts)]}]})
            started = time.perf_counter()
            try:
                connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
                ok = response.status == 200 and b'"values"' in payload
                reason = f"HTTP {response.status}: {payload[:200]!r}"
            except (OSError, http.client.HTTPException) as err:
                ok, reason = False, repr(err)
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            elapsed = time.perf_counter() - started
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
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
    return summarise(latencies, time.monotonic() - started, errors[0], samples)


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
        results = {"server": [], "direct": []}
        for r in range(args.rounds):
            a = load_round(port, texts, args.clients, args.seconds)
            results["server"].append(a)
            print(
                f"round {r + 1} A server  {a['requests_per_s']:.1f} req/s  p50 {a['p50_ms']:.1f} ms  p99 {a['p99_ms']:.1f} ms  errors {a['errors']} {a['error_samples'] or ''}",
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
        "direct_requests_per_s": round(median("direct", "requests_per_s"), 1),
        "direct_p50_ms": round(median("direct", "p50_ms"), 1),
    }
    figures["server_vs_direct_throughput"] = round(
        figures["server_requests_per_s"] / figures["direct_requests_per_s"], 2
    )
    print(
        f"medians: server {figures['server_requests_per_s']} req/s (p50 {figures['server_p50_ms']} ms, p99 "
        f"{figures['server_p99_ms']} ms, {figures['server_errors']} errors) vs direct {figures['direct_requests_per_s']} req/s "
        f"-> ratio {figures['server_vs_direct_throughput']}"
    )
    print(json.dumps(figures))
    return 0 if figures["server_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
