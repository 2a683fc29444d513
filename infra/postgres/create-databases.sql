-- Run by the postgres image on its first start (docker-entrypoint-initdb.d). POSTGRES_DB creates
-- Prefect's database; MLflow's backend store gets its own, owned by the same user.
CREATE DATABASE mlflow;
