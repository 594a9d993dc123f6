"""Inputs: discovery (folders, prefixes, globs, manifests), tar shards, HLS playlists, sidecar transcripts."""
