"""Serving: a local stand-in that speaks TF Serving's REST API, its client, and the redeploy step."""
