"""Data: image sources (digits, image folders, MedMNIST .npz, torchvision) read into uint8 tensors, split, and batched."""
