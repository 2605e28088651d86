"""Measure how to fine-tune a pretrained image model: frozen, full and layer-wise, accuracy vs cost."""
