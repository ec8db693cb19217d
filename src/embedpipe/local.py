"""Running embedpipe's pipelines on this machine with `kfp.local` (SubprocessRunner).

The components run as subprocesses of the current Python (which has embedpipe installed), so no
container engine is needed; artifacts land under `pipeline_root/<pipeline>-<timestamp>/<task>/`.
"""

from __future__ import annotations

import json
import os
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

    def uri(self, task: str, output: str) -> str:
        return self.outputs[task][output]["uri"]

    def metadata(self, task: str, output: str) -> dict:
        return self.outputs[task][output].get("metadata", {})


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


def run_locally(pipeline_func, arguments: dict, *, pipeline_root: str | os.PathLike = ".embedpipe/runs") -> LocalRun:
    """Runs a pipeline with kfp.local's SubprocessRunner in this Python environment.

    Args:
        pipeline_func: A `@dsl.pipeline` function from `embedpipe.pipelines`.
        arguments: The pipeline's parameters.
        pipeline_root: Folder under which each run gets its own folder.

    Returns:
        LocalRun with the run folder and every task's outputs.

    Raises:
        RuntimeError: when a task fails (its log, printed above, says why).
    """
    from kfp import local

    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    # Components may load the packaged model; nothing may reach for a hub from a local run.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    before = {p.name for p in root.iterdir()}
    # kfp.local warns that our base image is "custom": under SubprocessRunner it is not used at all.
    warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom", category=RuntimeWarning)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    pipeline_func(**arguments)
    new_dirs = sorted((p for p in root.iterdir() if p.is_dir() and p.name not in before), key=lambda p: p.stat().st_mtime)
    if not new_dirs:
        raise RuntimeError(f"the pipeline ran but left no run folder under {root}")
    run_dir = new_dirs[-1]
    return LocalRun(run_dir, read_run_outputs(run_dir))
