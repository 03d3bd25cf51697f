#!/bin/sh
# The minio-init service (compose.yaml), a one-shot job: the buckets, one MinIO
# user per job and its policy (docker/minio-policies/<job>.json). Safe to re-run:
# every step creates what is missing and resets what exists (a rotated secret).
#
# Every secret comes from the environment (.env through compose.yaml). The root
# credentials reach mc through MC_HOST_lab, not through its arguments; each job's
# secret key is an argument of `mc admin user add` (mc takes it no other way),
# inside this short-lived container only.
#
# Bucket lab:    landing/ (ingest), warehouse/ (ingest writes; transform, monitor read),
#                features/ (transform publishes the online features; serve reads them)
# Bucket mlflow: the MLflow server's artifacts; clients reach them through the server.
# Every user of a bucket may list its keys (S3 clients check the bucket before they
# read or write); objects are readable and writable only under the prefixes above.
set -eu

export MC_HOST_lab="http://${MINIO_ROOT_USER}:${MINIO_ROOT_PASSWORD}@minio:9000"

mc mb --ignore-existing lab/lab lab/mlflow

for file in /minio-policies/*.json; do
    name=${file##*/}
    mc admin policy create lab "${name%.json}" "$file"
done

# add_user USER SECRET_KEY POLICY...
add_user() {
    user=$1 secret=$2
    shift 2
    mc admin user add lab "$user" "$secret" >/dev/null
    for policy in "$@"; do
        # attach fails when the policy is attached already (minio/mc#4863): detach it first.
        mc admin policy detach lab "$policy" --user "$user" >/dev/null 2>&1 || true
        mc admin policy attach lab "$policy" --user "$user"
    done
}

add_user ingest "$S3_INGEST_SECRET_KEY" ingest
add_user transform "$S3_TRANSFORM_SECRET_KEY" transform
add_user monitor "$S3_MONITOR_SECRET_KEY" monitor
add_user serve "$S3_SERVE_SECRET_KEY" serve
add_user mlflow "$S3_MLFLOW_SECRET_KEY" mlflow
# The Airflow worker and the `lab` tools container run every job in one process.
add_user pipeline "$S3_PIPELINE_SECRET_KEY" ingest transform monitor
