"""The DAGs' StatsD metrics: the retraining gate and model, the live monitor's gauges."""
