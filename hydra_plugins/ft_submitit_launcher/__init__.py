"""hydra-submitit-launcher with a multirun that survives the scheduler: see launcher.py."""
