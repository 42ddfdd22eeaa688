"""What a pipeline run produced, read from ML Metadata: run result, model report, model card."""
