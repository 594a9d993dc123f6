"""mmbatch: score video collections for sentiment, clip by clip, on Ray Data."""

__version__ = "0.1.0"
