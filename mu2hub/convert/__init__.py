"""Checkpoints of other libraries and of the reference code -> mu2hub paths: transformers, timm / big_vision roots,
the reference notebooks' states."""
