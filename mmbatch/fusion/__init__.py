"""Fusion: the fusion stage, the trainable fusion model, its training and metrics."""
