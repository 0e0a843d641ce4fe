"""Training: one µ2Net child (optimizer, steps, mesh) and fine-tuning a downloaded task."""
