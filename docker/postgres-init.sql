-- One server, one database per concern. Runs once, on an empty data volume.
create database mlflow;
create database airflow;
