-- One-time initialization of the production PostgreSQL (docker-compose.yaml, service `postgres`).
-- The postgres image runs this file with psql from /docker-entrypoint-initdb.d on the FIRST start
-- only (empty data volume). Passwords come from the container environment through psql's
-- \getenv (psql >= 15), so no secret is written in this file.
--
--   role     database(s)            used by
--   airflow  airflow                Airflow metadata DB and Celery result backend
--   mlflow   mlflow, mlflow_auth    MLflow tracking/registry store, MLflow basic-auth user store
--   feast    feast                  Feast SQL registry
\set ON_ERROR_STOP on

\getenv airflow_password POSTGRES_AIRFLOW_PASSWORD
\getenv mlflow_password POSTGRES_MLFLOW_PASSWORD
\getenv feast_password POSTGRES_FEAST_PASSWORD

SELECT :{?airflow_password} AND :{?mlflow_password} AND :{?feast_password} AS passwords_set \gset
\if :passwords_set
\else
  DO $$ BEGIN RAISE EXCEPTION 'POSTGRES_AIRFLOW_PASSWORD, POSTGRES_MLFLOW_PASSWORD and POSTGRES_FEAST_PASSWORD must be set (run make env)'; END $$;
\endif
SELECT length(:'airflow_password') >= 16 AND length(:'mlflow_password') >= 16
       AND length(:'feast_password') >= 16 AS passwords_strong \gset
\if :passwords_strong
\else
  DO $$ BEGIN RAISE EXCEPTION 'database role passwords must have at least 16 characters'; END $$;
\endif

-- Nobody but the owner (and the superuser) may connect to a database.
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow ENCODING 'UTF8' TEMPLATE template0;
REVOKE ALL ON DATABASE airflow FROM PUBLIC;

CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow ENCODING 'UTF8' TEMPLATE template0;
CREATE DATABASE mlflow_auth OWNER mlflow ENCODING 'UTF8' TEMPLATE template0;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
REVOKE ALL ON DATABASE mlflow_auth FROM PUBLIC;

CREATE ROLE feast LOGIN PASSWORD :'feast_password';
CREATE DATABASE feast OWNER feast ENCODING 'UTF8' TEMPLATE template0;
REVOKE ALL ON DATABASE feast FROM PUBLIC;

-- The default database of the image: only the superuser uses it.
REVOKE ALL ON DATABASE postgres FROM PUBLIC;

\unset airflow_password
\unset mlflow_password
\unset feast_password
