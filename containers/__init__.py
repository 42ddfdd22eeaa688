"""The compose stack on a real Docker engine: the engine itself, the (air-gapped) image set, up/down/run."""
