"""Where the streaming job's messages come from: Pub/Sub, or (locally) a file of change messages.

A file holds one message per line, in the JSON of `embedpipe.embed.streaming.messages` (blank lines are
skipped). It is played to the job as Beam's `TestStream`: every line is a message whose publish time is
its place in the file (line n at n microseconds), so a later line is the newer version of a document, all
lines fall in the first window, and the stream ends after the last one (the job ends with it). This is
how `embed_stream` runs on Beam's local runner: Pub/Sub is not reachable there.
"""

from __future__ import annotations


def read_message_lines(path: str) -> list[bytes]:
    """The message bodies of a file (or of the visible files of a folder, in name order), local or gs://.

    Raises:
        FileNotFoundError: when there is nothing to read.
    """
    from apache_beam.io.filesystems import FileSystems

    from embedpipe.embed.job import list_files

    files = list_files(path)
    if not files:
        raise FileNotFoundError(f"messages {path}: no such file, or a folder with no files in it")
    lines = []
    for file in files:
        with FileSystems.open(file) as f:
            lines += [line.rstrip(b"\r\n") for line in f.read().split(b"\n") if line.strip()]
    return lines


def messages_from_file(path: str):
    """A `TestStream` of the file's messages (publish time = place in the file), then the end of the stream."""
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue
    from apache_beam.utils.timestamp import Timestamp

    lines = read_message_lines(path)
    stream = TestStream().advance_watermark_to(0)
    if lines:
        stream = stream.add_elements(
            [TimestampedValue(line, Timestamp(micros=n)) for n, line in enumerate(lines, start=1)]
        )
    return stream.advance_watermark_to_infinity()


def pubsub_source(subscription: str = "", topic: str = ""):
    """Beam's `ReadFromPubSub` of the subscription (preferred) or topic."""
    from apache_beam.io.gcp.pubsub import ReadFromPubSub

    return ReadFromPubSub(subscription=subscription or None, topic=None if subscription else topic)


__all__ = ["messages_from_file", "pubsub_source", "read_message_lines"]
