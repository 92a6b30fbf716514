"""Loading the wine CSV (13 numeric features + a `target` column of class names)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TARGET_COLUMN = "target"


@dataclass
class Dataset:
    X: np.ndarray  # (n_rows, n_features), float64
    y: np.ndarray  # (n_rows,), class names as str
    feature_names: list[str]


def load_csv(path: str | Path) -> Dataset:
    """Reads the CSV; the last column must be `target`, all others numeric."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty file") from None
        if not header or header[-1] != TARGET_COLUMN:
            raise ValueError(f"{path}: last column must be '{TARGET_COLUMN}', got {header[-1:]}")
        feature_names = header[:-1]
        rows, labels = [], []
        for line_no, record in enumerate(reader, start=2):
            if not record:
                continue
            if len(record) != len(header):
                raise ValueError(f"{path}:{line_no}: expected {len(header)} fields, got {len(record)}")
            try:
                rows.append([float(v) for v in record[:-1]])
            except ValueError as e:
                raise ValueError(f"{path}:{line_no}: {e}") from None
            labels.append(record[-1])
    if not rows:
        raise ValueError(f"{path}: no data rows")
    return Dataset(
        X=np.asarray(rows, dtype=np.float64),
        y=np.asarray(labels, dtype=str),
        feature_names=feature_names,
    )
