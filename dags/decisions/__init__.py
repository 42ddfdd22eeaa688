"""Pure decisions of the DAGs: the retraining gate, its summary line, and what triggers a retrain."""
