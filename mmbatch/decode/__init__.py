"""Clip planning and decoding (CPU only)."""
