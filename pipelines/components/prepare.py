"""prepare: read the input's CSV files, split them into train and holdout with a fixed seed.

The label column is `label` (by default); every other column must be numeric.
Outputs: train.csv and data.json in --train-data, holdout.csv and data.json in --holdout-data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from common import DATA_INFO_FILE, HOLDOUT_FILE, TRAIN_FILE, csv_files, fingerprint, write_json
from sklearn.model_selection import train_test_split


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw-data", type=Path, required=True)
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--holdout-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--train-data", type=Path, required=True)
    parser.add_argument("--holdout-data", type=Path, required=True)
    args = parser.parse_args(argv)

    files = csv_files(args.raw_data)
    if not files:
        print(f"prepare: no CSV files in {args.raw_data}", file=sys.stderr)
        return 2
    frames = [pd.read_csv(file) for file in files]
    data = pd.concat(frames, ignore_index=True)
    if args.label_column not in data.columns:
        print(
            f"prepare: label column {args.label_column!r} missing; columns are "
            f"{list(data.columns)}",
            file=sys.stderr,
        )
        return 2
    features = [c for c in data.columns if c != args.label_column]
    non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(data[c])]
    if non_numeric:
        print(f"prepare: non-numeric feature columns: {non_numeric}", file=sys.stderr)
        return 2
    before = len(data)
    data = data.dropna()
    labels = data[args.label_column]
    stratify = labels if labels.value_counts().min() >= 2 else None
    train, holdout = train_test_split(
        data, test_size=args.holdout_fraction, random_state=args.seed, stratify=stratify
    )
    info = {
        "fingerprint": fingerprint(files, args.raw_data),
        "files": len(files),
        "rows": before,
        "rows_dropped_na": before - len(data),
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        "label_column": args.label_column,
        "features": features,
        "seed": args.seed,
        "holdout_fraction": args.holdout_fraction,
    }
    for folder, frame, name in (
        (args.train_data, train, TRAIN_FILE),
        (args.holdout_data, holdout, HOLDOUT_FILE),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        frame.to_csv(folder / name, index=False)
        write_json(folder / DATA_INFO_FILE, info)
    print(
        f"prepare: {len(files)} file(s), {before} rows -> train {len(train)}, "
        f"holdout {len(holdout)}; fingerprint {info['fingerprint'][:12]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
