"""Command line of the streaming job: document changes from Pub/Sub, upserted and deleted in pgvector as they arrive.

    python -m embedpipe.embed.streaming --subscription projects/P/subscriptions/S \\
        --database-uri postgresql://user@10.0.0.5/db --table docs --model gs://b/tuned \\
        --runner DataflowRunner --project P --region us-central1 --temp-location gs://b/tmp

Messages are JSON objects:

    {"id": "d1", "title": "...", "text": "...", "metadata": {...}}     new or changed document
    {"id": "d1", "delete": true}                                       remove it (and its chunk rows `d1#n`)

`_id` is accepted for `id`; optional `sequence` (an integer) and `updated_at` (RFC 3339 time) order the
versions of a document within a window (see `embedpipe.embed.streaming.messages`). Bad messages become
dead letters: counted, logged with the reason, and published to --dead-letter-topic when one is given.

Flags this command does not know are Beam pipeline options.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from embedpipe.embed.streaming.config import StreamConfig, prepare_stream_config
from embedpipe.embed.streaming.run import run_stream, stream_dataflow_args


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m embedpipe.embed.streaming", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_argument_group("source and target")
    source.add_argument("--subscription", default="", help="Pub/Sub subscription projects/P/subscriptions/S")
    source.add_argument("--topic", default="", help="Pub/Sub topic projects/P/topics/T (instead of a subscription)")
    source.add_argument("--dead-letter-topic", default="", help="also publish dead letters (JSON with the reason) to this topic")
    source.add_argument("--database-uri", default="", help="Postgres/pgvector URI of the vector database (AlloyDB/Cloud SQL: its private IP)")
    source.add_argument("--table", default="embeddings", help="pgvector table (default: %(default)s)")
    source.add_argument("--skip-table-check", action="store_true", help="do not create/check the table from this machine (it cannot reach the database)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="default", help="model folder, gs:// folder, hub id or 'default' (default: %(default)s)")
    model.add_argument("--skip-model-check", action="store_true", help="do not load the model on this machine before submitting")
    model.add_argument("--task-type", default="RETRIEVAL_DOCUMENT", help="selects the document prompt (default: %(default)s)")
    model.add_argument("--chunk-tokens", type=int, default=0, help="split documents into chunks of this many tokens (0 = no chunking)")
    model.add_argument("--chunk-overlap", type=int, default=0, help="tokens shared by neighbouring chunks (default: %(default)s)")
    model.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: %(default)s)")
    model.add_argument("--output-dimensionality", type=int, default=0, help="keep this many leading dimensions, re-normalised (0 = all)")
    model.add_argument("--device", default="", help="cpu, cuda, ... (default: cuda when there is one)")
    model.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="auto = bf16 on GPU (default: %(default)s)")
    window = parser.add_argument_group("micro-batches")
    window.add_argument("--window-seconds", type=float, default=5.0, help="fixed window (publish time) per write (default: %(default)s)")
    window.add_argument("--allowed-lateness-seconds", type=int, default=3600, help="late messages are still written this long after their window (default: %(default)s)")
    window.add_argument("--write-shards", type=int, default=4, help="database writers per window (default: %(default)s)")
    cloud = parser.add_argument_group("runner (other flags are passed to Beam)")
    cloud.add_argument("--runner", default="DirectRunner", choices=["DirectRunner", "DataflowRunner"], help="(default: %(default)s)")
    cloud.add_argument("--project", default="", help="Dataflow: Google Cloud project")
    cloud.add_argument("--region", default="us-central1", help="Dataflow: region (default: %(default)s)")
    cloud.add_argument("--temp-location", "--temp_location", default="", help="Dataflow: gs:// folder for temporary files")
    cloud.add_argument("--job-name", "--job_name", default="", help="Dataflow: job name (default: embed-stream-<UTC time>)")
    cloud.add_argument("--sdk-container-image", "--sdk_container_image", default="", help="Dataflow: worker image (default: this version's embedpipe-dataflow)")
    cloud.add_argument("--machine-type", "--machine_type", default="", help="Dataflow: worker machine type")
    cloud.add_argument("--max-workers", "--max_num_workers", type=int, default=0, help="Dataflow: autoscaling bound")
    cloud.add_argument("--accelerator-type", default="", help="Dataflow: GPU per worker, e.g. nvidia-l4 ('' = CPU workers)")
    cloud.add_argument("--accelerator-count", type=int, default=1, help="Dataflow: GPUs per worker (default: %(default)s)")
    cloud.add_argument("--service-account", default="", help="Dataflow: worker service account e-mail")
    cloud.add_argument("--network", default="", help="Dataflow: VPC network")
    cloud.add_argument("--subnetwork", default="", help="Dataflow: subnetwork URL (regions/R/subnetworks/S)")
    cloud.add_argument("--streaming", action="store_true", help="accepted for Beam's spelling; this job always streams")
    return parser


def config_and_args_from_argv(argv: Sequence[str] | None = None) -> tuple[StreamConfig, list[str]]:
    """Parses the command line into a checked StreamConfig and the Beam options to run it with."""
    args, extra = _parser().parse_known_args(argv)
    remote = args.runner == "DataflowRunner"
    gpu = remote and bool(args.accelerator_type)
    config = prepare_stream_config(
        args.subscription,
        args.topic,
        database_uri=args.database_uri,
        table=args.table,
        model=args.model,
        task_type=args.task_type,
        chunk_tokens=args.chunk_tokens,
        chunk_overlap=args.chunk_overlap,
        batch_size=args.batch_size,
        output_dimensionality=args.output_dimensionality,
        device=args.device,
        precision=args.precision,
        share_across_processes=gpu,
        model_copies=max(args.accelerator_count, 1) if gpu else 1,
        window_seconds=args.window_seconds,
        allowed_lateness_seconds=args.allowed_lateness_seconds,
        write_shards=args.write_shards,
        dead_letter_topic=args.dead_letter_topic,
        check_model=not args.skip_model_check,
        prepare_table=not args.skip_table_check,
    )
    if not remote:
        return config, list(extra)
    beam_args = stream_dataflow_args(
        project=args.project,
        region=args.region,
        temp_location=args.temp_location,
        job_name=args.job_name,
        sdk_container_image=args.sdk_container_image,
        service_account=args.service_account,
        network=args.network,
        subnetwork=args.subnetwork,
        machine_type=args.machine_type,
        max_workers=args.max_workers,
        accelerator_type=args.accelerator_type,
        accelerator_count=args.accelerator_count,
    )
    return config, beam_args + list(extra)


def main(argv: Sequence[str] | None = None) -> int:
    from embedpipe.models import ModelLoadError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        config, beam_args = config_and_args_from_argv(argv)
        result = run_stream(config, beam_args)
    except (ModelLoadError, ValueError) as err:
        print(f"embed stream: {err}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


__all__ = ["config_and_args_from_argv", "main"]
