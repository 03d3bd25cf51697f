"""Names that several packages must spell the same way: tables, the model, aliases, pools, tags.

A value that the dbt project spells too (the served model and its alias, in
the exposures) is checked against it by ``tests/core/test_core.py``.
"""

from __future__ import annotations

# --- the lake ----------------------------------------------------------------------
# Rows that failed validation, one Iceberg table for every source (raw namespace).
QUARANTINE_TABLE = "quarantine"
# The flight events the lake sink writes from the stream (raw namespace; no declared source).
FLIGHT_EVENTS_TABLE = "flight_events"
# Lineage columns every raw row carries (the loader writes them, dbt ignores them).
LINEAGE_COLUMNS = ("_source_file", "_source_checksum", "_load_id", "_loaded_at")

# --- the warehouse -----------------------------------------------------------------
# Which Iceberg snapshot of every raw table the warehouse holds (schema raw).
SNAPSHOTS_TABLE = "lake_snapshots"
# The mart a model trains on, and the staging model of flights.
TRAINING_MART = "training_flights"
STAGING_FLIGHTS = "stg_nycflights__flights"
# Marts named so are the API's lookup tables: published together as the online features.
ONLINE_MART_PREFIX = "online_"

# --- the model and its registry ------------------------------------------------------
# The default registered model name (``LAB_MODEL_NAME``); dbt's exposure names it too.
MODEL_NAME = "flight_delay"
CHAMPION = "champion"  # the alias the API serves
CHALLENGER = "challenger"  # the alias every new model gets
# The tracking server's identity of the promotion gate: on the full stack, the only one
# allowed to set or delete any other alias (stack/tracking_server.py).
MLFLOW_PROMOTER = "promote"

# MLflow tags the training run, the gate and the readers share.
TAG_PREFIX = "lab."
TAG_SNAPSHOT_PREFIX = "lab.snapshot."  # + raw table name: the Iceberg snapshot id trained on
TAG_CHECKSUM_TRAIN = "lab.checksum_train"
TAG_MODEL_URI = "lab.model_uri"
TAG_PROMOTION_DECISION = "lab.promotion.decision"
TAG_PROMOTION_REASON = "lab.promotion.reason"

# --- orchestration -------------------------------------------------------------------
# Airflow pool of every task that opens the warehouse (one slot on DuckDB).
WAREHOUSE_POOL = "duckdb"
