"""Train the fusion head on your labels, from the pipeline's own output (no video is decoded again).

    mmbatch train --output s3://bucket/scores/ --labels labels.csv --out fusion-head/
    mmbatch train --output scores/ --labels mosi.parquet --label-range -3 3 --out head/

Labels (CSV or Parquet): `video_id`, then `clip_id` or `start_s`/`end_s` (matched to the clip it
overlaps most), and `label`: negative|neutral|positive, or a number in --label-range. An optional
`split` column (train|val|test) replaces the seeded split by video. The checkpoint folder gets the
model (save_pretrained), metrics.json and metrics.md; score with it by setting
`fusion: {mode: trained, checkpoint: <folder>}`. It also gets reliability.yaml: zero-shot fusion's
`fusion.reliability` fitted on the same labels (how far to trust each modality; a weak or random
one gets 0), for keeping zero-shot fusion. Exit codes: 0 trained, 2 bad labels or clips.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmbatch.cli import configure_logging, deprecated_flag, errors_as_exit_codes, json_option, logging_option


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = p.add_mutually_exclusive_group(required=True)
    root.add_argument("--output", help="the scored output's root, as every command that reads one names it "
                                       "(its clips/ holds the embeddings)")
    root.add_argument("--clips", dest="old_clips", help=argparse.SUPPRESS)  # the spelling before --output
    p.add_argument("--labels", required=True, help="CSV or Parquet of labels")
    p.add_argument("--label-range", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="range of numeric labels, mapped to valence -1..1 (e.g. -3 3)")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--seed", type=int, default=0, help="the seed of the split by video and of training")
    p.add_argument("--epochs", type=int, default=200, help="at most this many (early stopping on the validation loss)")
    p.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default: TrainConfig's)")
    p.add_argument("--config", default=None, help="pipeline YAML, for storage_options and the output's format/catalog")
    logging_option(p)
    json_option(p)
    return p.parse_args(argv)


@errors_as_exit_codes
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    if args.old_clips:
        deprecated_flag("--clips", "--output", "the scored output's root, as in report, index and the others")

    from mmbatch.config import reader_settings
    from mmbatch.errors import ExitCode
    from mmbatch.fusion.training import (
        TrainConfig,
        embedding_dims,
        encoder_identities,
        evaluate,
        fit_fusion_reliability,
        join_labels,
        load_clips,
        read_labels,
        reliability_yaml,
        save_checkpoint,
        split_by_video,
        train_fusion,
    )

    options, output_config = reader_settings(args.config)
    args.clips = args.output or args.old_clips
    try:
        clips = load_clips(args.clips, options, output_config)
        labels = read_labels(args.labels, tuple(args.label_range) if args.label_range else None)
        joined, report = join_labels(clips, labels)
        if report["matched"] == 0:
            raise ValueError(f"none of the {report['labels']} labels matched a scored clip under {args.clips}")
        encoders = encoder_identities(args.clips, set(joined["model_fingerprint"]), options)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return ExitCode.USAGE
    if not args.json:
        print(f"labels: {report['matched']} of {report['labels']} matched clips of {report['videos']} videos")
    joined["split"] = split_by_video(joined, args.seed)
    dims = embedding_dims(joined)
    model, history = train_fusion(joined, dims, TrainConfig(seed=args.seed, epochs=args.epochs,
                                                            **({"lr": args.lr} if args.lr is not None else {})))
    result = evaluate(model, joined, dims)
    result["epochs"] = len(history)
    result["zero_shot_reliability"] = fit_fusion_reliability(joined)
    save_checkpoint(model, args.out, dims, encoders, result, report)
    fitted = reliability_yaml(result["zero_shot_reliability"])
    Path(args.out, "reliability.yaml").write_text(fitted)
    if args.json:
        print(json.dumps({"checkpoint": args.out, "labels": report, "trained": result["trained"],
                          "zero_shot": result["zero_shot"], "zero_shot_reliability": result["zero_shot_reliability"]},
                         default=str))
    else:
        print(Path(args.out, "metrics.md").read_text().rstrip() + f"\n\ncheckpoint: {args.out}\n"
              f"zero-shot alternative, {Path(args.out, 'reliability.yaml')}:\n{fitted}")
    return ExitCode.OK

