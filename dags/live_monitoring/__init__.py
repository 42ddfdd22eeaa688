"""Helpers of the `credit_risk_monitoring` DAG that run in the Airflow environment (standard library + Airflow)."""
