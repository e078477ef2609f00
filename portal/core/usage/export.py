"""The usage history as CSV: the portal's download and the management API's
``Accept: text/csv`` both write it here, so cells are escaped one way."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime

from portal.core.usage.services import EXPORT_COLUMNS

#: The most rows one CSV export holds; a last row says when it stopped there.
CSV_MAX_ROWS = 100_000
CSV_CHUNK = 1000
#: A cell starting with one of these is a formula to spreadsheet software.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """A cell that spreadsheet software shows as text, never runs as a formula (OWASP)."""
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def csv_lines(rows: Iterator[tuple[datetime, *tuple[str, ...]]],
              *, max_rows: int = CSV_MAX_ROWS) -> Iterator[str]:
    """:func:`~portal.core.usage.services.export_rows` as CSV text, in chunks, header first;
    past ``max_rows`` a last row says the export stopped there."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for occurred_at, *cells in rows:
        count += 1
        if count > max_rows:
            writer.writerow([f"# export stopped at {max_rows} rows: narrow the filters "
                             "or the dates to get the rest"])
            break
        writer.writerow([occurred_at.isoformat().replace("+00:00", "Z"),
                         *(csv_cell(c) for c in cells)])
        if count % CSV_CHUNK == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
