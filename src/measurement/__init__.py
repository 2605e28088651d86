"""Measurement: what a run costs and how far it moved (FLOPs, peak memory, drift from the pretrained model) and the frozen-feature cache."""
