"""Training: the jitted step, the loop with checkpoints and resume, evaluation, metrics."""
