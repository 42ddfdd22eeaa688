"""Shared foundations every room reads: settings, the feature spec, process control, permissions, records."""
