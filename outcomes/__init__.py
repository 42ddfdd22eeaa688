"""Delayed loan outcomes: intake, the join to predictions, realized and CBPE-estimated performance."""
