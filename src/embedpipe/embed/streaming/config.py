"""The streaming job's settings (`StreamConfig`), checked on the launching machine before anything runs.

A streaming worker that cannot load its model, or whose table has another dimension, would retry
forever; `prepare_stream_config` finds those problems (and a bad source, window or table name) first,
and `prepare_vector_table` creates or checks the table before any worker writes to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from embedpipe.embed import documents as docs
from embedpipe.embed.pipeline import EmbedConfig
from embedpipe.embed.settings import ModelSettings

_SUBSCRIPTION = re.compile(r"^projects/[^/]+/subscriptions/[^/]+$")
_TOPIC = re.compile(r"^projects/[^/]+/topics/[^/]+$")


@dataclass
class StreamConfig:
    """What the streaming job reads, embeds and writes; resolved on the launching machine.

    Attributes:
        embed: The batch job's configuration (model, prompts, model identity, chunking, batch sizes); its
            input/output fields are unused here.
        subscription: `projects/P/subscriptions/S` to read (preferred: messages published while the job
            is down wait there).
        topic: `projects/P/topics/T` to read through a subscription Dataflow creates (used when no
            subscription is given).
        messages: A file (or folder) of change messages, one JSON per line, played in file order on Beam's
            local runner instead of Pub/Sub (`embedpipe.embed.streaming.sources`).
        database: A Postgres URI, or `embedpipe.vectorstore.ConnectionSettings` (AlloyDB, Cloud SQL).
        table: The pgvector table (`table` or `schema.table`).
        window_seconds: Length of the fixed windows: the micro-batches that are deduplicated and written.
        allowed_lateness_seconds: How long after its window a late message is still written.
        write_shards: Database writers per window (each document always goes to the same one).
        dead_letter_topic: `projects/P/topics/T` the dead letters are published to ("" = logged only).
    """

    embed: EmbedConfig
    subscription: str = ""
    topic: str = ""
    messages: str = ""
    database: Any = ""
    table: str = "embeddings"
    window_seconds: float = 5.0
    allowed_lateness_seconds: int = 3600
    write_shards: int = 4
    dead_letter_topic: str = ""
    dimension: int = field(default=0, repr=False)  # the model's output size, when it was checked


def check_source(subscription: str = "", topic: str = "", messages: str = "") -> None:
    """Raises ValueError unless exactly one source is given: a well-formed Pub/Sub subscription or topic, or
    a file of messages (FileNotFoundError when that is missing)."""
    given = [
        name for name, value in (("subscription", subscription), ("topic", topic), ("messages", messages)) if value
    ]
    if not given:
        raise ValueError(
            "give --subscription projects/P/subscriptions/S (or --topic projects/P/topics/T, or locally --messages "
            "FILE) to read from"
        )
    if len(given) > 1:
        both = "both" if len(given) == 2 else "all of"
        raise ValueError(f"give one source to read from, not {both} {', '.join(given[:-1])} and {given[-1]}")
    if messages:
        from embedpipe.embed.job import list_files

        if not list_files(messages):
            raise FileNotFoundError(f"messages {messages}: no such file, or a folder with no files in it")
        return
    if subscription and not _SUBSCRIPTION.match(subscription):
        raise ValueError(f"subscription {subscription!r} must look like projects/PROJECT/subscriptions/NAME")
    if topic and not _TOPIC.match(topic):
        raise ValueError(f"topic {topic!r} must look like projects/PROJECT/topics/NAME")
    from apache_beam.io.gcp.pubsub import parse_subscription, parse_topic

    # Beam's own checks (project id and name rules), here rather than when the pipeline is built
    if subscription:
        parse_subscription(subscription)
    else:
        parse_topic(topic)


#: The component's parameters that become `ConnectionSettings` (component name -> field name).
CONNECTION_PARAMETERS = {
    "target": "target",
    "database_uri": "uri",
    "instance": "instance",
    "database": "database",
    "user": "user",
    "password_env": "password_env",
    "password_secret": "password_secret",
    "iam_auth": "iam_auth",
    "ip_type": "ip_type",
}


def check_runner_source(remote: bool, has_messages: bool, *, pubsub_only_remotely: bool = False) -> None:
    """A file of messages is read on the local runner only; with `pubsub_only_remotely` (the component, whose
    local runs cannot reach Pub/Sub either) the local runner needs one."""
    if remote and has_messages:
        raise ValueError("messages (a file) is read on the local runner only; on Dataflow give subscription or topic")
    if pubsub_only_remotely and not remote and not has_messages:
        raise ValueError("runner DirectRunner reads a file of messages: connect `messages` (Pub/Sub needs Dataflow)")


def connection_settings(options: dict, *, remote: bool, **fakes):
    """The `ConnectionSettings` of the component's (or command line's) connection options, checked.

    Raises:
        ConnectionConfigError: bad settings, a password in clear, or for Dataflow workers the embedded
            database or `password_env` (they do not have the launcher's environment).
    """
    from embedpipe.vectorstore.connections import ConnectionConfigError, ConnectionSettings
    from embedpipe.vectorstore.conninfo import check_no_password

    values = {field: options[name] for name, field in CONNECTION_PARAMETERS.items() if name in options}
    if values.get("uri"):
        check_no_password(values["uri"], what="database_uri")
    connection = ConnectionSettings(**values, **fakes)
    if remote and connection.target == "postgres" and not connection.uri:
        raise ConnectionConfigError(
            "database_uri is empty, which means the embedded local database: Dataflow workers cannot reach it; give "
            "database_uri, or target alloydb / cloudsql with instance"
        )
    if remote and connection.password_env:
        raise ConnectionConfigError(
            f"password_env {connection.password_env!r} would be read on the Dataflow workers, which do not have "
            "this task's environment; give password_secret (Secret Manager) or iam_auth instead"
        )
    return connection.check()


def prepare_stream_config(
    subscription: str = "",
    topic: str = "",
    *,
    messages: str = "",
    database_uri: str = "",
    connection=None,
    table: str = "embeddings",
    model: ModelSettings | str = "default",
    task_type: str = "RETRIEVAL_DOCUMENT",
    chunk_tokens: int = 0,
    chunk_overlap: int = 0,
    window_seconds: float = 5.0,
    allowed_lateness_seconds: int = 3600,
    write_shards: int = 4,
    dead_letter_topic: str = "",
    check_model: bool = True,
    prepare_table: bool = True,
) -> StreamConfig:
    """Checks the streaming job's settings on the launching machine, before anything is read or written.

    A streaming worker that cannot load its model would retry forever, so by default the model is loaded
    here once (on CPU) and embeds one text; the table is created if missing (with its index), or its
    dimension checked against the model's. See `StreamConfig` and `embedpipe.embed.job.prepare_config`
    for the arguments.

    Args:
        model: `ModelSettings`, or just the model reference (default settings).
        messages: A file of change messages to read instead of Pub/Sub (Beam's local runner only).
        database_uri: Postgres URI of the vector database; or give `connection`.
        connection: `embedpipe.vectorstore.ConnectionSettings` (AlloyDB / Cloud SQL connectors), checked
            here; a password only through its `password_env` / `password_secret`, never in its URI.
        check_model: Load the model here (turn off where the launcher cannot hold it).
        prepare_table: Create or check the table here (turn off where the launcher cannot reach the database).

    Raises:
        ModelLoadError: the model folder is missing, is not a model, or does not load.
        ValueError: bad source, connection settings, chunking, batch sizes, window, table name, or a table
            of another dimension.
        FileNotFoundError: `messages` names no file.
    """
    from embedpipe.embed.handler import load_encoder
    from embedpipe.models import ModelLoadError, model_prompts, use_hf_token
    from embedpipe.prompts import resolve_prompts
    from embedpipe.vectorstore.conninfo import check_no_password
    from embedpipe.vectorstore.identifiers import split_table_name

    if database_uri and connection is None:  # first: a password goes in connection's password_env / _secret
        check_no_password(database_uri, what="database_uri")
    if connection is not None:
        if connection.uri:
            check_no_password(connection.uri, what="database_uri")
        connection.check()
    check_source(subscription, topic, messages)
    if dead_letter_topic:
        if not _TOPIC.match(dead_letter_topic):
            raise ValueError(f"dead_letter_topic {dead_letter_topic!r} must look like projects/PROJECT/topics/NAME")
        from apache_beam.io.gcp.pubsub import parse_topic

        parse_topic(dead_letter_topic)
    if not database_uri and connection is None:
        raise ValueError("give database_uri (or connection settings) for the vector database to write to")
    split_table_name(table)
    docs.check_chunking(chunk_tokens, chunk_overlap)
    settings = (ModelSettings(model=model) if isinstance(model, str) else model).checked()
    if not window_seconds > 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    if allowed_lateness_seconds < 0 or write_shards < 1:
        raise ValueError(
            f"allowed_lateness_seconds must be >= 0 and write_shards >= 1, got {allowed_lateness_seconds}, {write_shards}"
        )
    with use_hf_token(settings.hf_token_secret):  # a gated hub model's prompts
        prompts = resolve_prompts(task_type, model_prompts(settings.model))
    embed = EmbedConfig(
        input_pattern=subscription or topic or messages,
        input_format="file" if messages else "pubsub",
        output="",
        model_settings=settings,
        prompts=prompts,
        model_identity=settings.identity(),
        chunk_tokens=chunk_tokens,
        chunk_overlap=chunk_overlap,
        table=table,
    )
    config = StreamConfig(
        embed=embed,
        subscription=subscription,
        topic=topic,
        messages=messages,
        database=connection if connection is not None else database_uri,
        table=table,
        window_seconds=window_seconds,
        allowed_lateness_seconds=allowed_lateness_seconds,
        write_shards=write_shards,
        dead_letter_topic=dead_letter_topic,
    )
    if check_model:
        try:
            encoder = load_encoder(
                settings.model,
                batch_size=1,
                output_dimensionality=settings.output_dimensionality,
                device="cpu",
                precision="fp32",
                backend=settings.backend,
                hf_token_secret=settings.hf_token_secret,
            )
            config.dimension = int(encoder.embed(["embedpipe model check"]).shape[1])
        except ModelLoadError:
            raise
        except Exception as err:  # noqa: BLE001 - whatever the model's files make the loader raise
            raise ModelLoadError(f"could not load model {settings.model!r}: {type(err).__name__}: {err}") from err
    if prepare_table and config.dimension:
        prepare_vector_table(config)
    return config


def prepare_vector_table(config: StreamConfig) -> None:
    """Creates the table and its index if missing, or checks an existing table's dimension (before any worker writes)."""
    from embedpipe.vectorstore import PgVectorWriter

    PgVectorWriter(config.database, config.table).prepare(config.dimension)


__all__ = [
    "CONNECTION_PARAMETERS",
    "StreamConfig",
    "check_runner_source",
    "check_source",
    "connection_settings",
    "prepare_stream_config",
    "prepare_vector_table",
]
