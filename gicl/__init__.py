"""gicl: a PyTorch Lightning training platform for VQ-based generative image codecs."""

__version__ = "0.1.0"
