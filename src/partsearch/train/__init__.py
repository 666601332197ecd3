"""Training: the engine (loop, AMP, DDP, logs), optimizer and schedule builders, checkpoints."""
