"""The commands of ``lab``, one module per area; ``lab.main`` registers them.

Each command imports the domain code it calls inside its body, so that
``lab --help`` does not pay for importing dbt, MLflow or Airflow.
"""
