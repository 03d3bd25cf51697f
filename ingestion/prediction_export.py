"""The API's prediction log as a source: its rows exported to a Parquet file that lands like any raw file.

The log lives in a database (SQLite embedded, Postgres in the full stack:
``LAB_PREDICTION_LOG_URL``). Exporting it to a file first keeps one path into
the lake: the file is landed under its content's SHA-256, validated against
the declaration, quarantined row by row and loaded with lineage, exactly as a
CSV would be. Rows are written in ``prediction_id`` order, so the same rows
give the same bytes and land once however often the log is loaded.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from core.errors import LabError
from core.settings import Settings
from core.uris import redact
from ingestion.declarations import SourceDeclaration

TABLE = "predictions"


def export(decl: SourceDeclaration, settings: Settings, directory: Path, month: int | None) -> Path | None:
    """Write the log's rows (of one partition month, when given) to ``directory``; None when there are none.

    Args:
        month: the partition month as Iceberg's month index (months since 1970-01).

    Raises:
        LabError: the log's database cannot be read.
    """
    import pandas as pd
    import pyarrow.parquet as pq
    import sqlalchemy as sa

    url = sa.engine.make_url(settings.prediction_log_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return None  # no API has answered here yet (and connecting would create an empty file)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(TABLE):
                return None  # the API has not answered yet: the table is created with its first row
            frame = pd.read_sql_query(sa.text(f"select * from {TABLE} order by prediction_id"), conn)
    except sa.exc.SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        where = redact(settings.prediction_log_url)
        raise LabError(redact(f"cannot read the prediction log at {where}: {type(cause).__name__}: {cause}")) from None
    finally:
        engine.dispose()
    for column in frame.columns:
        if column.endswith("_at"):  # SQLite hands back text, Postgres aware datetimes: both become UTC
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    if month is not None and decl.partition is not None:
        when = frame[decl.partition.column]
        frame = frame[(when.dt.year - 1970) * 12 + when.dt.month - 1 == month]
    if frame.empty:
        return None
    path = directory / f"{decl.name}.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path
