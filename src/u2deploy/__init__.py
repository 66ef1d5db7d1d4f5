"""u2deploy: U²-Net from PyTorch to verified, benchmarked deployment artifacts."""

__version__ = "0.1.0"
