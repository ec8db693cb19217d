"""How fast `embedpipe --help` and `embedpipe --version` answer: the goal is under 0.3 s of wall time each.

Each contender is the installed console script of the venv this benchmark runs in (the `embedpipe` beside
`sys.executable`), run as a subprocess, so Python's own start-up is included; `python -c pass` with the
same interpreter is the baseline. The contenders alternate round by round (A B C A B C …, --rounds each)
because the machine is shared and noisy; the figures are medians, with ratios to the baseline.
`--before PATH` adds another `embedpipe` script (e.g. an older checkout's venv) as contender D, timed the
same way with `--help`.

    .venv/bin/python benchmarks/cli_startup.py [--rounds 15] [--before /other/.venv/bin/embedpipe]

The last line is one JSON object of the figures (seconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: The goal of issue 18: `embedpipe --help` and `--version` under this many seconds of wall time.
GOAL_S = 0.3


def _wall(command: list[str]) -> float:
    """Seconds `command` takes from start to exit; it must succeed (its output is discarded)."""
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def contenders(script: Path, before: str | None) -> dict[str, list[str]]:
    """Name -> command line, in the order each round runs them."""
    commands = {
        "A: embedpipe --help": [str(script), "--help"],
        "B: embedpipe --version": [str(script), "--version"],
        "C: python -c pass (baseline)": [sys.executable, "-c", "pass"],
    }
    if before:
        commands["D: --before embedpipe --help"] = [before, "--help"]
    return commands


def run(rounds: int, before: str | None = None) -> dict:
    """Times the contenders alternated, `rounds` times each (after one untimed warm-up round).

    Returns:
        Per contender its median and every time, the ratios to the baseline, and whether the goal is met.
    """
    script = Path(sys.executable).parent / "embedpipe"
    if not script.exists():
        raise SystemExit(f"no console script {script}: install embedpipe into this venv first (make install)")
    commands = contenders(script, before)
    for command in commands.values():  # warm-up: the files in the page cache, byte-code compiled
        _wall(command)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():
            times[name].append(_wall(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    baseline = medians["C: python -c pass (baseline)"]
    checked = ("A: embedpipe --help", "B: embedpipe --version")
    return {
        "rounds": rounds,
        "script": str(script),
        "goal_s": GOAL_S,
        "median_s": {name: round(value, 4) for name, value in medians.items()},
        "times_s": {name: [round(t, 4) for t in values] for name, values in times.items()},
        "ratio_to_baseline": {name: round(value / baseline, 2) for name, value in medians.items()},
        "goal_met": all(medians[name] < GOAL_S for name in checked),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15, help="timed runs per contender (default: %(default)s)")
    parser.add_argument("--before", help="another embedpipe console script to time with --help (contender D)")
    args = parser.parse_args(argv)
    if args.rounds < 5:
        parser.error("--rounds must be at least 5")
    result = run(args.rounds, args.before)
    print(f"{'contender':<32}{'median':>10}{'× baseline':>12}   times (s)")
    for name, median in result["median_s"].items():
        runs = " ".join(f"{t:.3f}" for t in result["times_s"][name])
        print(f"{name:<32}{median:>9.3f}s{result['ratio_to_baseline'][name]:>11.2f}×   {runs}")
    verdict = "met" if result["goal_met"] else "NOT met"
    print(f"goal: embedpipe --help and --version under {GOAL_S} s (medians of {args.rounds}): {verdict}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
