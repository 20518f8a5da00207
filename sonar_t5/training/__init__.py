"""The training run: setup, loop, checkpoints, precision and several processes."""
