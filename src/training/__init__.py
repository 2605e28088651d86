"""Training: one run from a typed config to its files (wiring in `run`, the loops in `engine`, optimizer and LR schedule in `optim`)."""
