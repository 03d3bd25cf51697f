"""The prediction log: every answer the API gives, kept.

- ``writer``: ``PredictionLog``, which takes each answer's row off the request
  path and writes it in batches, and refuses (``LogUnavailable``) when it could
  not keep it.
- ``spool``: the durable local overflow for rows the database cannot take yet.
- ``table``: the table's shape, the row of one answer, and the insert that
  skips rows already there.

Exporting the log into the lake is the opposite job, done by
``ingestion.prediction_export``.
"""

from serving.prediction_log.spool import Spool, SpoolFull
from serving.prediction_log.table import DATETIME_COLUMNS, log_row, metadata, predictions
from serving.prediction_log.writer import LogHealth, LogUnavailable, PredictionLog

__all__ = [
    "DATETIME_COLUMNS",
    "LogHealth",
    "LogUnavailable",
    "PredictionLog",
    "Spool",
    "SpoolFull",
    "log_row",
    "metadata",
    "predictions",
]
