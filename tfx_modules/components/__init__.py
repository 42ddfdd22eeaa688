"""The pipeline's custom TFX components: bulk CsvExampleGen, fairness gate, Pusher."""
