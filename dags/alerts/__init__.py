"""The DAGs' alerts: email and Slack channels, and the texts the monitoring DAG sends."""
