-- Postgres for the full stack (compose.yaml): one login role per job, the
-- databases they use, and only the privileges each job needs. Nothing but the
-- postgres service itself connects as the superuser.
--
-- The postgres image runs this once, on an empty data volume, as the superuser
-- connected to the warehouse database (POSTGRES_DB=lab). Every statement is
-- idempotent: to apply a change or a rotated password later, run it again:
--   docker compose exec postgres psql -v ON_ERROR_STOP=1 -U postgres -d lab \
--     -f /docker-entrypoint-initdb.d/10-roles.sql
-- The passwords come from the environment (PG_<ROLE>_PASSWORD, see .env.example),
-- never from this file. psql 15 or later (\getenv).
--
--   ingest     loads the lake: owns the Iceberg SQL catalog (schema iceberg) and schema raw
--   transform  dbt: reads raw, owns analytics (the marts), writes reference
--   monitor    the monitoring pass: reads raw, analytics and the prediction log, owns reference
--   serve      the API: inserts into the prediction log, nothing else (the online
--              features it serves come from the object store, not from Postgres)
--   mlflow     the MLflow server: owns database mlflow
--   airflow    Airflow's metadata and Celery results: owns database airflow
--   pipeline   the Airflow worker and the `lab` tools container run every job in one
--              process (one LAB_PG_USER): a member of ingest, transform and monitor,
--              with no privilege of its own
--
-- Psql variables mlflow_database and airflow_database rename those databases
-- (the tests run this against throwaway ones).
\set ON_ERROR_STOP on

\if :{?mlflow_database}
\else
\set mlflow_database mlflow
\endif
\if :{?airflow_database}
\else
\set airflow_database airflow
\endif

\getenv ingest_password PG_INGEST_PASSWORD
\getenv transform_password PG_TRANSFORM_PASSWORD
\getenv monitor_password PG_MONITOR_PASSWORD
\getenv serve_password PG_SERVE_PASSWORD
\getenv mlflow_password PG_MLFLOW_PASSWORD
\getenv airflow_password PG_AIRFLOW_PASSWORD
\getenv pipeline_password PG_PIPELINE_PASSWORD
select :{?ingest_password} and :{?transform_password} and :{?monitor_password} and :{?serve_password}
   and :{?mlflow_password} and :{?airflow_password} and :{?pipeline_password} as passwords_set \gset
\if :passwords_set
\else
\warn 'Set every PG_<ROLE>_PASSWORD variable (see .env.example) before running this script.'
do $$ begin raise exception 'a PG_<ROLE>_PASSWORD variable is not set'; end $$;
\endif

-- The roles: created when missing, their password (re)set from the environment.
do $$ begin
    if not exists (select from pg_roles where rolname = 'ingest') then create role ingest login; end if;
end $$;
do $$ begin
    if not exists (select from pg_roles where rolname = 'transform') then create role transform login; end if;
end $$;
do $$ begin
    if not exists (select from pg_roles where rolname = 'monitor') then create role monitor login; end if;
end $$;
do $$ begin
    if not exists (select from pg_roles where rolname = 'serve') then create role serve login; end if;
end $$;
do $$ begin
    if not exists (select from pg_roles where rolname = 'mlflow') then create role mlflow login; end if;
end $$;
do $$ begin
    if not exists (select from pg_roles where rolname = 'airflow') then create role airflow login; end if;
end $$;
do $$ begin
    if not exists (select from pg_roles where rolname = 'pipeline') then create role pipeline login; end if;
end $$;
alter role ingest with login nosuperuser nocreatedb nocreaterole password :'ingest_password';
alter role transform with login nosuperuser nocreatedb nocreaterole password :'transform_password';
alter role monitor with login nosuperuser nocreatedb nocreaterole password :'monitor_password';
alter role serve with login nosuperuser nocreatedb nocreaterole password :'serve_password';
alter role mlflow with login nosuperuser nocreatedb nocreaterole password :'mlflow_password';
alter role airflow with login nosuperuser nocreatedb nocreaterole password :'airflow_password';
alter role pipeline with login nosuperuser nocreatedb nocreaterole password :'pipeline_password';
grant ingest, transform, monitor to pipeline;

-- MLflow's and Airflow's databases, each owned by its service and closed to everyone else.
select format('create database %I owner mlflow', :'mlflow_database')
 where not exists (select from pg_database where datname = :'mlflow_database') \gexec
select format('create database %I owner airflow', :'airflow_database')
 where not exists (select from pg_database where datname = :'airflow_database') \gexec
alter database :"mlflow_database" owner to mlflow;
alter database :"airflow_database" owner to airflow;
revoke all on database :"mlflow_database" from public;
revoke all on database :"airflow_database" from public;

-- The warehouse database (this one): the lake's catalog, raw, the marts, the references, the prediction log.
-- CREATE on the database because `create schema if not exists` (dbt, the publisher) asks for it even
-- when the schema exists; TEMPORARY for dbt's incremental models.
revoke all on database :"DBNAME" from public;
grant connect on database :"DBNAME" to ingest, transform, monitor, serve;
grant create, temporary on database :"DBNAME" to ingest, transform, monitor;
revoke all on schema public from public;
grant usage on schema public to monitor, serve;

create schema if not exists iceberg authorization ingest;
create schema if not exists raw authorization ingest;
create schema if not exists analytics authorization transform;
create schema if not exists reference authorization monitor;
alter schema iceberg owner to ingest;
alter schema raw owner to ingest;
alter schema analytics owner to transform;
alter schema reference owner to monitor;
-- pyiceberg's SQL catalog creates its tables unqualified: in schema iceberg.
alter role ingest in database :"DBNAME" set search_path = iceberg;

grant usage on schema raw to transform, monitor;
grant usage on schema analytics to monitor;
grant usage on schema reference to transform;
-- What the jobs already wrote (a re-run), then what they write from now on: the
-- owner role or pipeline (which runs every job) creates, the readers can read.
grant select on all tables in schema raw to transform, monitor;
grant select on all tables in schema analytics to monitor;
grant select, insert, update, delete on all tables in schema reference to transform;
alter default privileges for role ingest, pipeline in schema raw grant select on tables to transform, monitor;
alter default privileges for role transform, pipeline in schema analytics grant select on tables to monitor;
alter default privileges for role monitor, pipeline in schema reference
    grant select, insert, update, delete on tables to transform;

-- The API's prediction log: the shape of serving/prediction_log/table.py (a test compares the two),
-- made here so that serve needs no CREATE. ON CONFLICT (prediction_id) DO NOTHING reads the key,
-- so serve may read that one column, and insert; monitor reads the rows to land them in the lake.
create table if not exists public.predictions (
    prediction_id varchar(36) not null primary key,
    predicted_at timestamp with time zone not null,
    model_name varchar(200) not null,
    model_version varchar(20) not null,
    carrier varchar(8),
    flight integer,
    tailnum varchar(16),
    origin varchar(8),
    dest varchar(8),
    scheduled_departure_at timestamp with time zone,
    features text not null,
    missing_features text not null,
    probability float not null,
    is_delayed boolean not null
);
create index if not exists ix_predictions_predicted_at on public.predictions (predicted_at);
grant insert, select (prediction_id) on public.predictions to serve;
grant select on public.predictions to monitor;
