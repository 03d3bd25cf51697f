"""Month arithmetic in the one form every layer uses: 'YYYY-MM' and Iceberg's month index."""

from __future__ import annotations

from datetime import date

from core.errors import LabError


def month_index(month: str) -> int:
    """'YYYY-MM' -> Iceberg's month transform value (months since 1970-01).

    Raises:
        LabError: ``month`` is not of the form YYYY-MM.
    """
    try:
        year, number = (int(p) for p in month.split("-"))
        if len(month) != 7 or not 1 <= number <= 12:
            raise ValueError
    except ValueError:
        raise LabError(f"partition {month!r} is not a month in the form YYYY-MM") from None
    return (year - 1970) * 12 + number - 1


def month_label(index: int) -> str:
    """Iceberg's month index -> 'YYYY-MM' (the inverse of :func:`month_index`)."""
    return f"{1970 + index // 12:04d}-{index % 12 + 1:02d}"


def month_start(index: int) -> date:
    """Iceberg's month index -> the first day of that month."""
    return date(1970 + index // 12, index % 12 + 1, 1)
