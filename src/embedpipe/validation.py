"""Problems found in user input, collected so that all of them are reported at once.

Every problem names the file, the line (1-based, as an editor shows it) and the field, and says what
would be right. Validation runs to the end before anything is written; `DataValidationError` then
lists every problem (up to a cap) in one message.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input.

    Attributes:
        file: The path or URI of the file, as the user gave it.
        line: The 1-based line number, or None for a problem with the whole file.
        field: The JSON field or TSV column, or None for a problem with the whole line.
        message: What is wrong and what would be right.
    """

    file: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        what = f"field '{self.field}': " if self.field else ""
        return f"{where}: {what}{self.message}"


class DataValidationError(ValueError):
    """Raised when the input has problems; nothing has been written.

    Attributes:
        problems: The problems kept (at most the cap), in the order found.
        total: How many problems were found in all, including those past the cap.
    """

    def __init__(self, problems: list[Problem], total: int | None = None):
        self.problems = list(problems)
        self.total = len(self.problems) if total is None else total
        lines = [f"{self.total} problem(s) found in the input data; nothing was written:"]
        lines += [f"  - {p}" for p in self.problems]
        if self.total > len(self.problems):
            lines.append(
                f"  ... and {self.total - len(self.problems)} more (only the first {len(self.problems)} are listed)"
            )
        super().__init__("\n".join(lines))


class ProblemCollector:
    """Collects problems up to `max_problems`, and counts the rest.

    Example:
        >>> problems = ProblemCollector()
        >>> problems.add("corpus.jsonl", 3, "_id", "missing")
        >>> problems.raise_if_any()
        Traceback (most recent call last):
        ...
        embedpipe.validation.DataValidationError: 1 problem(s) found in the input data; nothing was written:
          - corpus.jsonl:3: field '_id': missing
    """

    def __init__(self, max_problems: int = 50):
        if max_problems < 1:
            raise ValueError("max_problems must be at least 1")
        self.max_problems = max_problems
        self.problems: list[Problem] = []
        self.total = 0

    def add(self, file: str, line: int | None, field: str | None, message: str) -> None:
        self.total += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(Problem(file, line, field, message))

    def __bool__(self) -> bool:
        return self.total > 0

    def raise_if_any(self) -> None:
        if self.total:
            raise DataValidationError(self.problems, self.total)
