"""Reading a JSONL corpus line by line with its file and line number, so every bad line is named `file:line`.

Beam's `ReadFromText` splits files at byte offsets and decodes each line itself: a line that is not UTF-8
fails the whole job, and no line knows its number. Here each file is read by one worker from its start
(`.gz` decompressed as `ReadFromText` does), its lines left as bytes for `documents.parse_json_line` to
decode, and a reshuffle spreads them over the workers again, so the embedding (the costly part) stays
parallel; the reading itself is not split inside one file.
"""

from __future__ import annotations

from collections.abc import Iterator

from embedpipe.extras import optional_imports

with optional_imports("dataflow", "the Beam embedding job"):  # a missing Beam: the pip line, not a traceback
    import apache_beam as beam


def numbered_lines(readable) -> Iterator[tuple[str, bytes]]:
    """(`file:line`, line bytes without its end) for each non-blank line of a `ReadableFile`."""
    path = readable.metadata.path
    with readable.open() as handle:
        for number, line in enumerate(iter(handle.readline, b""), start=1):
            line = line.rstrip(b"\n").rstrip(b"\r")
            if line.strip():
                yield f"{path}:{number}", line


class ReadJsonLines(beam.PTransform):
    """A file pattern -> (`file:line`, bytes) elements, every non-blank line of every matching file."""

    def __init__(self, pattern: str):
        super().__init__()
        self._pattern = pattern

    def expand(self, pipeline):
        from apache_beam.io import fileio

        return (
            pipeline
            | "MatchCorpus" >> fileio.MatchFiles(self._pattern)
            | "OpenCorpus" >> fileio.ReadMatches()
            | "NumberedLines" >> beam.FlatMap(numbered_lines)
            | "SpreadLines" >> beam.Reshuffle()
        )
