"""Data readers: one module per source (`dataset.kind`), each a `Reader` registered under its module's name (src/data/registry.py).

digits.py (scikit-learn's bundled digits), imagefolder.py (your image folders, decoded once into the
decoded-data cache), medmnist.py (a MedMNIST .npz with its official splits), torchvision.py (a
torchvision dataset by class name). A new source is a new module here plus conf/dataset/<name>.yaml.
"""
