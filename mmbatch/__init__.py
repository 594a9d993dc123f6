"""mmbatch: score video collections for sentiment, clip by clip, on Ray Data.

    import mmbatch
    result = mmbatch.score("videos/", "scores/", config="pipelines/demo.yaml")   # mmbatch/cli/api.py
    clips = mmbatch.read_clips("scores/").to_pandas()                           # mmbatch/readers/clips.py
"""

__version__ = "0.1.0"
# The public functions, imported on first use: `import mmbatch` stays instant and loads no Ray or torch.
_API = {"score": "mmbatch.cli.api", "read_clips": "mmbatch.readers.clips"}


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'mmbatch' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
