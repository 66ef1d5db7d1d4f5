"""Measuring artifacts: accuracy metrics, evaluation, parity against PyTorch, latency."""
