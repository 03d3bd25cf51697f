"""Assets that connect the DAGs: a DAG that refreshes one triggers the DAGs that read it."""

from __future__ import annotations

from airflow.sdk import Asset

from core.names import CHAMPION as CHAMPION_ALIAS
from core.names import MODEL_NAME

# The feature marts (training and online tables), rebuilt by a monthly run.
MARTS = Asset("lab://warehouse/marts", group="dbt")
# The registry's champion alias, possibly moved by the promotion gate.
CHAMPION = Asset(f"lab://registry/{MODEL_NAME}/{CHAMPION_ALIAS}", group="mlflow")
# The prediction log's rows in the lake, landed by `land_predictions`; triggers `monitor`.
PREDICTIONS = Asset("lab://lake/raw/predictions", group="monitoring")
# A monitoring rule fired: `train_and_promote` runs on it under the `on_alert` retrain policy.
RETRAIN_REQUEST = Asset("lab://monitoring/retrain-request", group="monitoring")
