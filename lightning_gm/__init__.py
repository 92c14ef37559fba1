"""lightning_gm: a PyTorch Lightning platform for explicit-density generative models."""

__version__ = "0.1.0"
