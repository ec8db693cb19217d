"""Running the embedding jobs on Beam: what the batch job and the streaming job share.

This module owns the Beam metrics namespace and its counters, Beam's local runners (one for batch, one
for streaming), reading a finished run's counters back, turning a worker's failure to load the model
into a readable `ModelLoadError`, and cancelling a submitted Dataflow job (draining a streaming one) when
the task that launched it is stopped (SIGTERM). It knows nothing of what the jobs compute: `embedpipe.embed.job` (batch) and
`embedpipe.embed.streaming` build their pipelines and use these to run them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterable, Iterator

from embedpipe.extras import optional_imports

with optional_imports("dataflow", "the Beam embedding job"):  # a missing Beam: the pip line, not a traceback
    from apache_beam.metrics import Metrics

from embedpipe.models import ModelLoadError

#: The Beam metrics namespace of every counter the jobs keep (`embedpipe:documents_embedded`, ...).
NAMESPACE = "embedpipe"
#: `--runner` values the batch job runs on `local_runner`.
LOCAL_RUNNERS = (None, "DirectRunner", "direct")
#: `--runner` values the streaming job runs on `local_stream_runner`.
LOCAL_STREAM_RUNNERS = LOCAL_RUNNERS + ("BundleBasedDirectRunner",)


def counter(name: str):
    """The Beam counter `name` in the jobs' namespace."""
    return Metrics.counter(NAMESPACE, name)


def counter_values(result, names: Iterable[str]) -> dict[str, int]:
    """Reads a run's counters (committed values where the runner has them); 0 for a name never counted.

    Args:
        result: A `PipelineResult` whose run has ended (or, for a Dataflow job, is running).
        names: The counters to read (the job's METRIC_NAMES or STREAM_METRIC_NAMES).
    """
    from apache_beam.metrics.metric import MetricsFilter

    values = {name: 0 for name in names}
    for found in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        name = found.key.metric.name
        if name in values:
            committed = getattr(found, "committed", None)
            values[name] += int(committed if committed is not None else found.attempted or 0)
    return values


def processes_per_machine(options) -> int:
    """How many worker processes share one machine's cores when the job runs with these Beam options.

    Beam's local runner in multi-process mode starts `--direct_num_workers` worker processes (0 = one per
    core); otherwise it runs the workers in this process. Dataflow's Python workers run one SDK process per
    vCPU unless `--experiments=no_use_multiple_sdk_containers`. Returns `embedpipe.threads.ONE_PER_CORE` for
    "one per core", else a count >= 1.
    """
    from apache_beam.options.pipeline_options import DebugOptions, DirectOptions, StandardOptions

    from embedpipe.threads import ONE_PER_CORE

    runner = options.view_as(StandardOptions).runner
    if runner in LOCAL_RUNNERS:
        direct = options.view_as(DirectOptions)
        if direct.direct_running_mode != "multi_processing":
            return 1
        return int(direct.direct_num_workers) if direct.direct_num_workers else ONE_PER_CORE
    if runner in ("DataflowRunner", "dataflow"):
        experiments = options.view_as(DebugOptions).experiments or []
        return 1 if "no_use_multiple_sdk_containers" in experiments else ONE_PER_CORE
    return 1


def with_worker_processes(config, options):
    """`config` (the batch or streaming job's) with its `model_settings.processes_per_machine` decided from
    the runner's options when it is 0 (auto): the worker processes that will share a machine's cores, which
    each process's thread budget divides them by."""
    from dataclasses import replace

    model = config.model_settings
    if model.processes_per_machine or model.share_across_processes:  # given, or one shared model per machine
        return config
    return replace(config, model_settings=replace(model, processes_per_machine=processes_per_machine(options)))


def local_runner(options=None):
    """Beam's portable runner (FnApiRunner) for local batch runs.

    Beam 2.77's DirectRunner first tries the Prism runner, which downloads a binary from GitHub; running
    the FnApiRunner directly needs no network and is what DirectRunner falls back to anyway. Its workers
    run in this process unless the options name an environment: `--environment_type=EXTERNAL
    --environment_config=HOST:PORT` hands every bundle to a Beam worker pool at that address, e.g. one
    running in our Dataflow image (tests/containers), so the DoFns, the model and the database writes
    execute there, as on Dataflow.
    """
    from apache_beam.options.pipeline_options import PortableOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    portable = options.view_as(PortableOptions) if options is not None else None
    if portable is None or not portable.environment_type:
        return FnApiRunner()
    from apache_beam.transforms import environments

    return FnApiRunner(default_environment=environments.Environment.from_options(portable))


def local_stream_runner():
    """Beam's Python direct runner: it runs streaming pipelines (TestStream, Pub/Sub) in this process.

    Beam 2.77's `DirectRunner` would try the Prism runner first, which downloads a binary; the
    FnApiRunner that the batch job uses locally does not run streaming pipelines.
    """
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

    return BundleBasedDirectRunner()


def model_load_error(err: BaseException | None) -> ModelLoadError | None:
    """The ModelLoadError behind `err` (a worker's, often only as text in a runner's error), or None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, ModelLoadError):
            return err
        if "ModelLoadError" in str(err):
            return ModelLoadError(str(err).split("ModelLoadError:", 1)[-1].strip().splitlines()[0])
        err = err.__cause__ or err.__context__
    return None


@contextlib.contextmanager
def model_errors_readable() -> Iterator[None]:
    """Around running a pipeline: a worker's failure to load the model is re-raised as its ModelLoadError."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - re-raised with the model error made readable
        load_error = model_load_error(err)
        if load_error is not None:
            raise load_error from err
        raise


@contextlib.contextmanager
def cancel_on_sigterm(result) -> Iterator[None]:
    """While waiting for a submitted job: SIGTERM (the pipeline task was cancelled) cancels the job too.

    Only in the main thread (where Python handles signals); the previous handler is restored afterwards.
    """
    previous_handler = _cancel_on_sigterm(result)
    try:
        yield
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


def _cancel_on_sigterm(result):
    if not _in_main_thread():
        return None

    def cancel(*_):
        logging.warning("cancel requested: cancelling the Dataflow job")
        try:
            result.cancel()
        finally:
            os._exit(1)

    return signal.signal(signal.SIGTERM, cancel)


@contextlib.contextmanager
def drain_on_sigterm(drain, *, exit=None) -> Iterator[None]:
    """While launching a streaming job: SIGTERM (the pipeline task was cancelled) drains the job.

    A streaming job never ends by itself; Vertex cancels a task with SIGTERM. Draining (not cancelling)
    lets the job finish writing what it has read, so no message read from Pub/Sub is lost.

    Args:
        drain: Called on SIGTERM; requests the drain (a no-op while no job exists yet).
        exit: Called after `drain` (default `os._exit(1)`: the task ends at once, as cancelled).
    """
    if not _in_main_thread():
        yield
        return

    def on_sigterm(*_):
        logging.warning("cancel requested: draining the Dataflow streaming job")
        try:
            drain()
        finally:
            (exit or (lambda: os._exit(1)))()

    previous_handler = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


__all__ = [
    "LOCAL_RUNNERS",
    "LOCAL_STREAM_RUNNERS",
    "NAMESPACE",
    "cancel_on_sigterm",
    "counter",
    "counter_values",
    "drain_on_sigterm",
    "local_runner",
    "local_stream_runner",
    "model_errors_readable",
    "model_load_error",
]
