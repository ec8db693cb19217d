"""What a person sees of `embedpipe run` (the command `make run` runs): one line per stage with its time and
figure, progress, the summary; kfp.local's dumps and the tasks' full logs in the log file of the run folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_tiny_example_data

EMBEDPIPE = Path(sys.executable).parent / "embedpipe"


@pytest.mark.slow
def test_embedpipe_run_console_is_short_names_every_stage_and_keeps_the_rest_in_the_log(tmp_path):
    data = make_tiny_example_data(tmp_path / "tiny")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EMBEDPIPE_PGDATA": str(tmp_path / "pg")}
    env.pop("EMBEDPIPE_VERBOSE", None)
    command = [str(EMBEDPIPE), "run", "--data", str(data), "--output-dir", "runs", "--train-steps", "2"]
    command += ["--batch-size", "2", "--margin", "-1", "--table", "console_run"]
    try:
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    finally:  # the embedded PostgreSQL the run started keeps running: the command the summary names stops it
        stopped = subprocess.run(
            [str(EMBEDPIPE), "db", "--stop"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
    console = done.stdout + done.stderr
    (tmp_path / "console.txt").write_text(console)  # beside the run, for a look after a failure
    assert done.returncode == 0, console
    lines = console.splitlines()
    assert len(lines) <= 40, console

    (run_dir,) = (tmp_path / "runs").iterdir()
    tasks = sorted(p.parent.name for p in run_dir.glob("*/executor_output.json"))
    assert {"prepare-data", "fine-tune", "evaluate", "embed-corpus", "upload-vectors"} <= {
        re.sub(r"-\d+$", "", t) for t in tasks
    }
    for task in tasks:  # every stage, as it starts and as it ends with its seconds
        assert any(re.fullmatch(rf"\d\d:\d\d:\d\d {re.escape(task)} \.\.\.", line) for line in lines), task
        assert any(re.match(rf"\d\d:\d\d:\d\d {re.escape(task)} done, \d+ s", line) for line in lines), task
    shown = "\n".join(lines)
    assert re.search(r"prepare-data done, \d+ s: 14 documents, \d+ queries", shown)
    assert re.search(r"fine-tune done, \d+ s: 2 steps, final loss \d", shown)
    assert re.search(r"evaluate(-\d)? done, \d+ s: NDCG@10 base [01]\.\d{4} -> tuned [01]\.\d{4}", shown)
    assert re.search(r"embed-corpus done, \d+ s: 14 vectors", shown)
    assert re.search(r"upload-vectors done, \d+ s: 14 rows: inserted 14, updated 0, deleted 0", shown)
    assert "[progress]" not in shown and "  fine-tune: training: " in shown  # progress lines, without the mark

    log = run_dir / "embedpipe-run.log"
    relative = str(log.relative_to(tmp_path))
    assert f"full log: {relative}" in shown and f"Full log: {relative}" in shown  # early, and in the summary
    text = log.read_text()
    assert "Got executor_input:" in text and "Wrote executor output file" in text  # kfp.local's dumps
    assert "Executing task" not in shown and "executor_input" not in shown
    assert str(tmp_path) not in shown  # relative paths only: nothing of this machine's folders

    assert (
        "The embedded PostgreSQL is still running (data: pg); stop it with: embedpipe db --stop --pgdata pg" in shown
    )
    assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped", stopped.stdout + stopped.stderr


@pytest.mark.slow
def test_a_failing_task_shows_its_cause_without_verbose(tmp_path):
    data = make_tiny_example_data(tmp_path / "tiny")
    with (data / "corpus.jsonl").open("a") as corpus:
        corpus.write('{"_id": "broken", "text": \n')  # a line that is not JSON: prepare-data refuses the data
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EMBEDPIPE_PGDATA": str(tmp_path / "pg")}
    env.pop("EMBEDPIPE_VERBOSE", None)
    command = [str(EMBEDPIPE), "run", "--data", str(data), "--output-dir", "runs", "--table", "never_written"]
    try:
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run([str(EMBEDPIPE), "db", "--stop"], cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr  # exits.RUN_FAILED
    assert "prepare-data FAILED after" in done.stdout
    shown_tail = [line for line in done.stdout.splitlines() if line.startswith("  | ")]
    assert 0 < len(shown_tail) <= 30 and any("corpus.jsonl" in line for line in shown_tail), done.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert f"the full log: {(run_dir / 'embedpipe-run.log').relative_to(tmp_path)}" in done.stderr
    assert "embedpipe run failed (task prepare-data)" in done.stderr
