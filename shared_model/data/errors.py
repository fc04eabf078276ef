"""One error type for every kind of bad input, so that callers (and the CLI) handle them alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class DataValidationError(ValueError):
    """Bad input data, located precisely enough for a data team to fix it.

    `row` is the 1-based data row within `file` (for CSV files the header is not counted, so
    row 1 is the second line of the file); None when the problem concerns the whole file.
    """

    def __init__(
        self,
        file: str | Path,
        expected: str,
        *,
        row: int | None = None,
        column: str | None = None,
        found: Any = None,
        more: int = 0,
    ) -> None:
        self.file = str(file)
        self.row = row
        self.column = column
        self.expected = expected
        self.found = found
        self.more = more
        where = [self.file]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        message = f"{', '.join(where)}: expected {expected}"
        if found is not None:
            message += f", found {found!r}"
        if more:
            message += f" ({more} more row(s) with the same problem)"
        super().__init__(message)
