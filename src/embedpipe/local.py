"""Running embedpipe's pipelines on this machine with `kfp.local`.

By default the components run as subprocesses of the current Python (SubprocessRunner: embedpipe
installed here, no container engine needed); with a DockerRunner (`embedpipe.docker_runner`) each task
runs in the image the compiled YAML names. Artifacts land under `pipeline_root/<pipeline>-<timestamp>/<task>/`.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LocalRun:
    """What a local pipeline run left behind.

    Attributes:
        run_dir: The folder of this run under the pipeline root.
        outputs: task name -> output name -> {"uri": ..., "metadata": {...}}.
    """

    run_dir: Path
    outputs: dict[str, dict[str, dict]] = field(default_factory=dict)
    started_at: float = 0.0

    def uri(self, task: str, output: str) -> str:
        return self.outputs[task][output]["uri"]

    def metadata(self, task: str, output: str) -> dict:
        return self.outputs[task][output].get("metadata", {})

    def task(self, component: str) -> str:
        """The task that ran a component: pipelines with branches name them `embed-corpus`, `embed-corpus-2`, …

        Raises:
            KeyError: when none or several tasks of the component ran.
        """
        ran = [
            t
            for t in self.outputs
            if t == component or (t.startswith(component + "-") and t[len(component) + 1 :].isdigit())
        ]
        if len(ran) != 1:
            raise KeyError(
                f"{len(ran)} tasks of {component!r} ran ({', '.join(ran) or 'none'}); tasks: {', '.join(self.outputs)}"
            )
        return ran[0]


class LocalRunFailed(RuntimeError):
    """A task of a local run failed; `run` holds what the tasks before it left (reports included)."""

    def __init__(self, message: str, run: LocalRun | None):
        super().__init__(message)
        self.run = run


def read_run_outputs(run_dir: Path) -> dict[str, dict[str, dict]]:
    """Reads each task's executor output of a finished local run."""
    outputs: dict[str, dict[str, dict]] = {}
    for executor_output in sorted(run_dir.glob("*/executor_output.json")):
        data = json.loads(executor_output.read_text())
        task = executor_output.parent.name
        outputs[task] = {}
        for name, value in data.get("artifacts", {}).items():
            artifact = value["artifacts"][0]
            outputs[task][name] = {"uri": artifact["uri"], "metadata": artifact.get("metadata", {})}
        for name, value in data.get("parameterValues", {}).items():
            outputs[task][name] = {"uri": "", "metadata": {"value": value}}
    return outputs


def run_locally(
    pipeline_func, arguments: dict, *, pipeline_root: str | os.PathLike = ".embedpipe/runs", runner=None
) -> LocalRun:
    """Runs a pipeline with kfp.local.

    Args:
        pipeline_func: A `@dsl.pipeline` function from `embedpipe.pipelines`.
        arguments: The pipeline's parameters.
        pipeline_root: Folder under which each run gets its own folder.
        runner: A kfp.local runner; default SubprocessRunner in this Python environment
            (`embedpipe.docker_runner.docker_runner` gives the DockerRunner of our images).

    Returns:
        LocalRun with the run folder and every task's outputs.

    Raises:
        LocalRunFailed: when a task fails (its log says why: printed by kfp.local, or in the run's log file under
            `embedpipe.local_console.watched_run`); carries the partial run.
    """
    from kfp import local

    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    # Components may load the packaged model; nothing may reach for a hub from a local run.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    before = {p.name for p in root.iterdir()}
    started_at = time.time()
    # kfp.local warns that our base image is "custom": under SubprocessRunner it is not used at all.
    warnings.filterwarnings(
        "ignore", message="You may be attemping to run a task that uses custom", category=RuntimeWarning
    )
    local.init(runner=runner or local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    try:
        pipeline_func(**arguments)
    except RuntimeError as err:
        run_dir = newest_run_dir(root, before)
        run = LocalRun(run_dir, read_run_outputs(run_dir), started_at) if run_dir else None
        raise LocalRunFailed(str(err), run) from err
    run_dir = newest_run_dir(root, before)
    if run_dir is None:
        raise RuntimeError(f"the pipeline ran but left no run folder under {root}")
    return LocalRun(run_dir, read_run_outputs(run_dir), started_at)


def newest_run_dir(root: Path, before: set[str]) -> Path | None:
    """The newest folder under `root` that was not there before (`before`: the names then); None if none."""
    new_dirs = sorted(
        (p for p in root.iterdir() if p.is_dir() and p.name not in before), key=lambda p: p.stat().st_mtime
    )
    return new_dirs[-1] if new_dirs else None


#: Parameters of a local run of `tune_and_index`: the packaged model on CPU, Beam's local runner, the
#: embedded Postgres; cloud-only steps (Model Registry, endpoints, Dataflow GPUs) switched off.
LOCAL_OVERRIDES = {
    "project": "",  # kfp.local cannot fill Vertex's {{$.pipeline_google_cloud_project_id}} placeholder
    "base_model_version_id": "default",
    "embed_runner": "DirectRunner",
    "vector_target": "postgres",
    "register_model": False,
    "deploy_model": False,
    "dataflow_accelerator_type": "",
    "database_iam_auth": False,
}
#: What a local run skips, said at the end of every local run.
CLOUD_ONLY_STEPS = (
    "package-for-serving + register-model (Vertex AI Model Registry)",
    "deploy-model (Vertex AI endpoint)",
)


def declared_parameters(pipeline_func) -> set[str]:
    """The parameters a pipeline declares."""
    return set(pipeline_func.component_spec.inputs or {})


def stage_times(run: LocalRun, started_at: float) -> list[tuple[str, float]]:
    """(task, seconds) in the order the tasks finished; kfp.local runs tasks one after another."""
    finished = sorted((p.stat().st_mtime, p.parent.name) for p in run.run_dir.glob("*/executor_output.json"))
    times, previous = [], started_at
    for mtime, task in finished:
        times.append((task, max(0.0, mtime - previous)))
        previous = mtime
    return times


def comparison_task(run: LocalRun) -> str | None:
    """The evaluate task that compared the tuned model with the base model."""
    for task, outputs in run.outputs.items():
        value = outputs.get("tuned_ndcg_at_10", {}).get("metadata", {}).get("value")
        if value is not None and value >= 0:
            return task
    return None


def indexed_model(run: LocalRun) -> str | None:
    """The model the indexed vectors were embedded with (the tuned model's folder, or the base model)."""
    for outputs in run.outputs.values():
        model = outputs.get("vectors", {}).get("metadata", {}).get("model")
        if model:
            return model
    return None


def example_query(run: LocalRun) -> str:
    """The text of the first test query of the run, for the `embedpipe search` example."""
    import pandas as pd

    prepared = run.outputs.get("prepare-data", {})
    if "test_labels" not in prepared:
        return "example query"
    labels = pd.read_parquet(prepared["test_labels"]["uri"])
    queries = pd.read_parquet(prepared["queries"]["uri"]).set_index("_id")["text"]
    return str(queries[labels["query-id"].iloc[0]]) if len(labels) else "example query"
