"""``lab doctor``: every service these settings point at, checked, with the fix for each failure.

Each check connects as the job would (the settings' own user and keys, never a
superuser) and answers in one row: what, where, ok or not, what it found, and
what to do. Run it as a job of the stack with ``lab stack run lab -- lab doctor``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import typer

from core.settings import Settings
from core.uris import redact
from lab import output
from lab.context import Target, settings_for


@dataclass
class Finding:
    check: str
    where: str
    ok: bool | None  # None: not in use here (an embedded home runs no Airflow or API until asked)
    found: str
    fix: str = ""


def _optional(settings: Settings) -> bool | None:
    """A server not answering fails a deployment (LAB_ENVIRONMENT=production), not a laptop."""
    return False if settings.environment == "production" else None


def _postgres(settings: Settings) -> Finding:
    from warehouse.connection import pg_connection

    where = f"{settings.pg_user}@{settings.pg_host}:{settings.pg_port}/{settings.pg_database}"
    if settings.dbt_target != "postgres":
        return Finding("postgres", where, None, "not used: the dbt target is DuckDB")
    try:
        with pg_connection(settings) as conn:
            version = conn.execute("show server_version").fetchone()[0]
            raw, marts = conn.execute(
                "select has_schema_privilege(current_user, 'raw', 'usage'),"
                " has_schema_privilege(current_user, %s, 'create')",
                (settings.pg_schema,),
            ).fetchone()
    except Exception as exc:  # any failure to connect is the finding
        return Finding("postgres", where, False, redact(str(exc).splitlines()[0]), "start Postgres or fix LAB_PG_*")
    return Finding("postgres", where, True, f"server {version}; reads raw: {raw}; writes {settings.pg_schema}: {marts}")


def _object_store(settings: Settings) -> list[Finding]:
    """The bucket answers; then, as this job, what it may read and write, against what its identity should allow."""
    if not settings.uses_s3:
        return [Finding("object store", settings.warehouse_uri, True, "local folder")]
    import uuid

    from botocore.exceptions import BotoCoreError, ClientError

    from stack import seaweedfs

    bucket = settings.warehouse_uri.removeprefix("s3://").split("/", 1)[0]
    secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else ""
    who = settings.s3_access_key_id or ""
    s3 = seaweedfs.client(settings.s3_endpoint or "", who, secret, settings.s3_region)
    where = f"{settings.s3_endpoint} {bucket}"
    try:
        s3.list_objects_v2(Bucket=bucket, MaxKeys=1)  # HeadBucket needs Read on the whole bucket; List is every job's
    except (BotoCoreError, ClientError) as exc:
        fix = f"create bucket {bucket!r} (s3-init) or fix LAB_S3_ENDPOINT and the job's keys"
        return [Finding("object store", where, False, str(exc)[:120], fix)]
    findings = [Finding("object store", where, True, f"bucket {bucket} answers {who}")]
    areas = {
        "landing": settings.landing_uri,
        "raw tables": f"{settings.warehouse_uri.rstrip('/')}/{settings.raw_namespace}",
        "features": settings.features_uri,
    }
    seen: dict[str, list[str]] = {"Read": [], "Write": []}
    wrong = []
    for area, uri in areas.items():
        if not uri.startswith(f"s3://{bucket}/"):
            continue
        key = f"{uri.removeprefix(f's3://{bucket}/').rstrip('/')}/.lab-doctor/{uuid.uuid4().hex}"
        for verb in ("Read", "Write"):
            try:
                if verb == "Read":
                    s3.head_object(Bucket=bucket, Key=key)  # absent: 404 when allowed, 403 when not
                else:
                    s3.put_object(Bucket=bucket, Key=key, Body=b"")
                    s3.delete_object(Bucket=bucket, Key=key)
                allowed = True
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                allowed = code in {"404", "NoSuchKey"}
            if allowed:
                seen[verb].append(area)
            if who in seaweedfs.ACTIONS and allowed != seaweedfs.allows(who, verb, bucket, key):
                wrong.append(f"{verb.lower()} {area}: {'allowed' if allowed else 'refused'}")
    found = "; ".join(f"{verb.lower()}s {', '.join(areas) or 'nothing'}" for verb, areas in seen.items())
    if wrong:
        fix = "the gateway does not enforce stack/seaweedfs.py's identities: rerun s3-config and restart s3"
        findings.append(Finding(f"access as {who}", where, False, "; ".join(wrong), fix))
    else:
        findings.append(Finding(f"access as {who}", where, True, found))
    return findings


def _catalog(settings: Settings) -> Finding:
    from ingestion.storage import open_catalog

    where = redact(settings.catalog_uri)
    try:
        tables = open_catalog(settings).list_tables(settings.raw_namespace)
    except Exception as exc:
        return Finding("iceberg catalog", where, False, redact(str(exc))[:120], "fix LAB_CATALOG_URI")
    fix = "" if tables else "run `lab ingest`"
    return Finding("iceberg catalog", where, True, f"{len(tables)} raw tables", fix)


def _mlflow(settings: Settings) -> Finding:
    import mlflow

    from ml.tracking import configure_mlflow

    where = redact(settings.mlflow_tracking_uri)
    try:
        configure_mlflow(settings)
        client = mlflow.MlflowClient()
        versions = client.search_model_versions(f"name = '{settings.model_name}'")
    except Exception as exc:
        return Finding("mlflow", where, False, str(exc).splitlines()[0][:120], "start the MLflow server or fix its URI")
    fix = "" if versions else "run `lab train` and `lab promote`"
    return Finding("mlflow", where, True, f"{len(versions)} versions of {settings.model_name}", fix)


def _mlflow_auth(settings: Settings) -> Finding:
    """A tracking server must refuse strangers and know this job by name (a local store has no sign-in)."""
    import httpx

    uri = settings.mlflow_tracking_uri
    if not uri.startswith(("http://", "https://")):
        return Finding("mlflow auth", redact(uri), None, "not used: a local store")
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/users/current"
    fix = "run the server with `--app-name lab-auth` (compose and `lab stack` do)"
    try:
        anonymous = httpx.get(url, timeout=5)
        password = settings.mlflow_password.get_secret_value() if settings.mlflow_password else ""
        signed_in = httpx.get(url, auth=(settings.mlflow_username, password), timeout=5)
    except httpx.HTTPError as exc:
        return Finding("mlflow auth", url, False, type(exc).__name__, "start the MLflow server or fix its URI")
    if anonymous.status_code != 401:
        return Finding("mlflow auth", url, _optional(settings), f"no sign-in asked (HTTP {anonymous.status_code})", fix)
    if signed_in.status_code != 200:
        who = settings.mlflow_username or "nobody"
        found = f"{who} refused (HTTP {signed_in.status_code})"
        return Finding("mlflow auth", url, False, found, "fix LAB_MLFLOW_USERNAME and LAB_MLFLOW_PASSWORD")
    return Finding("mlflow auth", url, True, f"strangers refused; signed in as {settings.mlflow_username}")


def _prediction_log(settings: Settings) -> Finding:
    import sqlalchemy

    where = redact(settings.prediction_log_url)
    try:
        engine = sqlalchemy.create_engine(settings.prediction_log_url)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except Exception as exc:
        found = redact(str(exc).splitlines()[0])[:120]
        return Finding("prediction log", where, False, found, "fix LAB_PREDICTION_LOG_URL")
    return Finding("prediction log", where, True, "answers")


def _airflow(settings: Settings) -> Finding:
    from stack.health import airflow_components

    url = f"http://127.0.0.1:{settings.airflow_port}/api/v2/monitor/health"
    states = airflow_components(settings.airflow_port)
    if isinstance(states, str):
        return Finding("airflow", url, _optional(settings), "not answering", "`lab airflow` or `lab stack up`")
    bad = {name: state for name, state in states.items() if state != "healthy"}
    found = ", ".join(f"{name} {state}" for name, state in states.items())
    return Finding("airflow", url, not bad, found, "see `lab stack status`" if bad else "")


def _api(settings: Settings) -> Finding:
    import httpx

    url = f"http://{settings.serve_host}:{settings.serve_port}/ready"
    try:
        status = httpx.get(url, timeout=3).json()["status"]
    except (httpx.HTTPError, ValueError, KeyError):
        return Finding("api", url, _optional(settings), "not answering", "`lab serve` or `lab stack up`")
    return Finding("api", url, status == "ready", status, "" if status == "ready" else "promote a model")


CHECKS: tuple[Callable[[Settings], Finding | list[Finding]], ...] = (
    _postgres,
    _object_store,
    _catalog,
    _mlflow,
    _mlflow_auth,
    _prediction_log,
    _airflow,
    _api,
)


def doctor_command(ctx: typer.Context, target: Target = None) -> None:
    """Check every service the settings point at (as this job's own user); print the fix for each failure."""
    settings = settings_for(ctx, target)
    table = output.table("check", "where", "", "found", "fix", "s", title="lab doctor")
    failed = 0
    for check in CHECKS:
        started = time.perf_counter()
        found = check(settings)
        seconds = f"{time.perf_counter() - started:.1f}"
        for finding in found if isinstance(found, list) else [found]:
            failed += finding.ok is False
            mark = {True: "[green]ok[/green]", False: "[red]FAIL[/red]", None: "[dim]-[/dim]"}[finding.ok]
            table.add_row(finding.check, finding.where, mark, finding.found, finding.fix, seconds)
    output.show(table)
    if failed:
        raise typer.Exit(1)
