"""What Airflow runs: the pipeline's steps as plain functions, and the Cosmos dbt group.

The DAG files under ``dags/`` only wire these together; the same functions run
from ``bench/airflow.py`` (the "lab directly" baseline) and from the tests.
"""
