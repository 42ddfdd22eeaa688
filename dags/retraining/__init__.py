"""Helpers of the `credit_risk_retraining` DAG that run in the Airflow environment (standard library + Airflow)."""
