"""gitune: hyperparameter sweeps of Generative Invariance Transfer on long-tailed image classification."""

__version__ = "0.1.0"
