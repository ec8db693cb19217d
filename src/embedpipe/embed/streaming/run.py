"""Running the streaming job: on Beam's local runner (tests, a finite stream) or submitted to Dataflow.

`run_stream` builds the graph (`embedpipe.embed.streaming.pipeline`) with `streaming=True`, runs it on
the runner the Beam options name (locally Beam's Python direct runner, with the counter workaround of
`embedpipe.embed.streaming.beam_patch`), and reports a `StreamResult`: the final state and counts of a
local run, or the id of a submitted Dataflow job (which runs until drained). Dataflow's Beam
options come from `embedpipe.embed.settings.DataflowSettings.beam_args(streaming=True)`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from embedpipe.extras import optional_imports

with optional_imports("dataflow", "the Beam embedding job"):  # a missing Beam: the pip line, not a traceback
    import apache_beam as beam

from embedpipe.embed.runtime import (
    LOCAL_STREAM_RUNNERS,
    NAMESPACE,
    counter_values,
    local_stream_runner,
    model_errors_readable,
    with_worker_processes,
)
from embedpipe.embed.streaming.beam_patch import count_every_bundle
from embedpipe.embed.streaming.config import StreamConfig
from embedpipe.embed.streaming.pipeline import build_stream_pipeline

log = logging.getLogger(__name__)

#: The streaming job's counters (Beam namespace `embedpipe`), as `StreamResult.metrics` reports them.
STREAM_METRIC_NAMES = (
    "messages_read",  # Pub/Sub messages, good or bad
    "messages_superseded",  # older versions of a document that a newer one in the same window replaced
    "dead_letters",  # bad messages and stale ones, each logged with the reason (and published, with a topic)
    "messages_stale",  # of those: a version older than what the table holds
    "documents_embedded",
    "chunks_embedded",
    "documents_upserted",  # documents written (their rows upserted, their vanished chunks deleted)
    "documents_deleted",  # delete messages applied
    "database_rows_written",
    "database_rows_deleted",
)


@dataclass
class StreamResult:
    """How a streaming run ended (local runs, or a finite test stream) or that it was submitted (Dataflow).

    Attributes:
        state: The runner's state ("DONE" locally; "RUNNING" for a submitted Dataflow job).
        metrics: STREAM_METRIC_NAMES counts (empty for a submitted job: see its Dataflow page).
        job_id: The Dataflow job id ("" locally).
    """

    state: str
    metrics: dict[str, int] = field(default_factory=dict)
    job_id: str = ""

    def summary(self) -> str:
        if self.job_id and not self.metrics:
            return f"Dataflow streaming job {self.job_id} is {self.state}; counters are on its Dataflow page (namespace {NAMESPACE})"
        return ", ".join(f"{name} {self.metrics.get(name, 0):,}" for name in STREAM_METRIC_NAMES)


def run_stream(
    config: StreamConfig, beam_args: Sequence[str] = (), *, source=None, runner=None, wait: bool | None = None
) -> StreamResult:
    """Builds the streaming pipeline and runs it (with `streaming=True`).

    Args:
        config: From `prepare_stream_config`.
        beam_args: Beam pipeline options (`DataflowSettings(...).beam_args(kind="embed-stream", streaming=True)` for Dataflow); default the local runner.
        source: Replaces `ReadFromPubSub` (tests pass a `TestStream`).
        runner: A PipelineRunner instance to use instead of the one `--runner` names.
        wait: Wait for the job to end (default: locally yes; a Dataflow streaming job runs until drained,
            so no: its id is returned once submitted).

    Raises:
        ModelLoadError: when the model cannot be loaded on a worker.
    """
    from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

    options = PipelineOptions(list(beam_args))
    options.view_as(StandardOptions).streaming = True
    options.view_as(SetupOptions).save_main_session = False
    local = options.view_as(StandardOptions).runner in LOCAL_STREAM_RUNNERS
    if runner is None and local:
        runner = local_stream_runner()
    config = replace(config, embed=with_worker_processes(config.embed, options))
    pipeline = beam.Pipeline(runner=runner, options=options)
    build_stream_pipeline(pipeline, config, source=source)
    counting = count_every_bundle() if local else contextlib.nullcontext()
    with model_errors_readable(), counting:
        result = pipeline.run()
        job_id = result.job_id() if hasattr(result, "job_id") and not local else ""
        if job_id:
            log.info("Dataflow streaming job %s submitted", job_id)
        if wait is None:
            wait = not job_id
        if not wait:
            return StreamResult(state=str(result.state), job_id=job_id)
        state = result.wait_until_finish()
    return StreamResult(
        state=str(state or result.state), metrics=counter_values(result, STREAM_METRIC_NAMES), job_id=job_id
    )


__all__ = ["STREAM_METRIC_NAMES", "StreamResult", "run_stream"]
