"""hydra-ray-launcher that can join a running Ray cluster: see launcher.py."""
