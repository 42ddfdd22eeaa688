"""The data gate: typed reading, TFDV validation, the drift gate, batch intake, retention."""
