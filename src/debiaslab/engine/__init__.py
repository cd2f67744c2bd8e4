"""The engine: how training runs, shared by every method (loop, precision, samplers, checkpoints)."""
