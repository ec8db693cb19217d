"""Before and after a change: one benchmark script run on two revisions of embedpipe, alternated.

Two versions of a package cannot share one Python process, so this is the one benchmark that starts
processes: the script (`benchmarks/<name>.py`, the version in this checkout) runs with the *base*
revision's library (a `git worktree` of it put first on `PYTHONPATH`) and with this checkout's, one
after the other, A B A B … (`--rounds` each), each run a fresh process on the same machine. The figures
named by `--figure` (dotted paths into each run's last-line JSON) are collected; medians and the
after/before ratio are printed, and the last line is one JSON object of them.

    python benchmarks/compare_revisions.py --base 5ad01f3 --script embed_corpus \\
        --figure medians_s.A_ours --figure ratios.ours_vs_plain_encode \\
        -- --docs 1000 --rounds 1 --skip-mltransform --skip-incremental

The base revision's library must accept the script's calls (a refactor that renames what the script
calls needs the base revision's script: `--base-script` runs that one for the base instead).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def figure(data: dict, path: str):
    for key in path.split("."):
        data = data[key]
    return data


def run(script: Path, library: Path, args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{library}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep))
    env.setdefault("HF_HUB_OFFLINE", "1")
    done = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{script} failed ({done.returncode}) with {library}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="git revision to compare with (e.g. main~3, a commit id)")
    parser.add_argument("--script", required=True, help="benchmark name, e.g. embed_corpus")
    parser.add_argument(
        "--base-script", action="store_true", help="run the base revision's own copy of the script for the base"
    )
    parser.add_argument(
        "--figure", action="append", required=True, help="dotted path into the script's JSON (repeatable)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("script_args", nargs=argparse.REMAINDER, help="after --: the script's own arguments")
    args = parser.parse_args(argv)
    script_args = [a for a in args.script_args if a != "--"]

    work = Path(tempfile.mkdtemp(prefix="bench-revisions-"))
    base_tree = work / "base"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(base_tree), args.base], check=True
    )
    base_commit = subprocess.run(
        ["git", "-C", str(base_tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    contenders = {
        f"before ({base_commit})": (
            base_tree / "benchmarks" if args.base_script else ROOT / "benchmarks",
            base_tree / "src",
        ),
        f"after ({head}, work tree)": (ROOT / "benchmarks", ROOT / "src"),
    }
    values: dict[str, dict[str, list]] = {name: {f: [] for f in args.figure} for name in contenders}
    try:
        for round_ in range(args.rounds):
            for name, (scripts, library) in contenders.items():
                data = run(scripts / f"{args.script}.py", library, script_args)
                for path in args.figure:
                    values[name][path].append(figure(data, path))
                print(
                    f"round {round_ + 1} {name}: " + ", ".join(f"{f} {values[name][f][-1]}" for f in args.figure),
                    flush=True,
                )
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)], check=False)

    (before, after) = contenders
    medians = {name: {f: statistics.median(v) for f, v in per.items()} for name, per in values.items()}
    ratios = {f: medians[after][f] / medians[before][f] if medians[before][f] else None for f in args.figure}
    for f in args.figure:
        print(f"{f}: before {medians[before][f]:.4g}, after {medians[after][f]:.4g}, after/before {ratios[f]:.3f}")
    print(
        json.dumps(
            {
                "benchmark": "compare_revisions",
                "script": args.script,
                "script_args": script_args,
                "base": base_commit,
                "head": head,
                "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
                "values": values,
                "medians": medians,
                "after_over_before": ratios,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
