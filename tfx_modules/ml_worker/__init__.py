"""The warm ML worker: Airflow tasks call into the TFX environment through it."""
