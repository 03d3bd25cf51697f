"""The warehouse side: publish the raw lake to a dbt target and run dbt."""
