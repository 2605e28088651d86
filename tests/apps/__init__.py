"""Tiny Hydra apps that are not this project: the sweeper plugin swept the way any Hydra user sweeps."""
