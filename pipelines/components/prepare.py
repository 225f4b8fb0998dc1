"""prepare: read the input's CSV files, split them into train and holdout with a fixed seed.

Every file must have the label column (--label-column, `label` by default) and the feature
columns (--feature-columns, comma-separated; `*`: every other column, the same in every file),
each numeric. Only those columns are kept. A file that does not fit fails the step with a
message naming the file and the column.
Outputs: train.csv and data.json in --train-data, holdout.csv and data.json in --holdout-data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from common import (
    ALL_FEATURES,
    DATA_INFO_FILE,
    HOLDOUT_FILE,
    TRAIN_FILE,
    csv_files,
    fingerprint,
    source_names,
    write_json,
)
from sklearn.model_selection import train_test_split


class DataError(ValueError):
    """A training file that does not fit the declared columns."""


def feature_list(text: str) -> list[str] | None:
    """--feature-columns: None for every column but the label."""
    if text.strip() == ALL_FEATURES:
        return None
    return [column for column in text.split(",") if column]


def read_training_file(
    path: Path, name: str, label: str, features: list[str] | None
) -> tuple[pd.DataFrame, list[str]]:
    """The file's label and feature columns, and its feature names, or a DataError."""
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: not a readable CSV file: {exc}") from exc
    columns = [str(column) for column in frame.columns]
    frame.columns = columns
    if label not in columns:
        raise DataError(f"{name}: label column {label!r} missing; its columns are {columns}")
    chosen = features if features is not None else [c for c in columns if c != label]
    missing = [column for column in chosen if column not in columns]
    if missing:
        raise DataError(f"{name}: feature column {missing[0]!r} missing; its columns are {columns}")
    if not chosen:
        raise DataError(f"{name}: no feature columns besides the label column {label!r}")
    for column in chosen:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            values = frame[column]
            bad = values[values.notna() & pd.to_numeric(values, errors="coerce").isna()]
            where = f" (line {bad.index[0] + 2}: {bad.iloc[0]!r})" if len(bad) else ""
            raise DataError(f"{name}: feature column {column!r} is not numeric{where}")
    return frame[[*chosen, label]], chosen


def read_training_data(
    raw_data: Path, files: list[Path], label: str, features: list[str] | None
) -> tuple[pd.DataFrame, list[str]]:
    """Every file's columns, checked; with every column as a feature, the same in each."""
    names = source_names(raw_data, files)
    frames: list[pd.DataFrame] = []
    first: tuple[str, list[str]] | None = None
    for file in files:
        frame, chosen = read_training_file(file, names[file], label, features)
        if first is None:
            first = (names[file], chosen)
        elif set(chosen) != set(first[1]):
            extra = sorted(set(chosen) - set(first[1]))
            lacking = sorted(set(first[1]) - set(chosen))
            raise DataError(
                f"{names[file]}: its feature columns differ from {first[0]}'s"
                + (f"; extra {extra}" if extra else "")
                + (f"; missing {lacking}" if lacking else "")
                + " (name the features in the policy's data.feature_columns to pick some)"
            )
        frames.append(frame[[*first[1], label]])
    assert first is not None
    return pd.concat(frames, ignore_index=True), first[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw-data", type=Path, required=True)
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--feature-columns", default=ALL_FEATURES)
    parser.add_argument("--holdout-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--train-data", type=Path, required=True)
    parser.add_argument("--holdout-data", type=Path, required=True)
    args = parser.parse_args(argv)

    files = csv_files(args.raw_data)
    if not files:
        print(f"prepare: no CSV files in {args.raw_data}", file=sys.stderr)
        return 2
    label = args.label_column
    try:
        data, features = read_training_data(
            args.raw_data, files, label, feature_list(args.feature_columns)
        )
    except DataError as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return 2
    before = len(data)
    data = data.dropna()
    labels = data[label]
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
        "label_column": label,
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
        f"holdout {len(holdout)}; label {label!r}, {len(features)} features; "
        f"fingerprint {info['fingerprint'][:12]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
