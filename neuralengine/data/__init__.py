"""Training data: action-value shards, readers and generators (needs no PyTorch)."""
