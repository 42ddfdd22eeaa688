"""Live monitoring: each run's window of logged predictions, live drift and its report."""
