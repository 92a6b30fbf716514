"""Train the wine classifier.

    python -m wine_model.train --data data/wine.csv --model-dir model --metrics metrics.json [--seed 42]

Stratified 80/20 split with a fixed seed, StandardScaler + LogisticRegression,
metrics on the held-out 20%. Same data + same seed + same library versions
give the same metrics.json, byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import joblib
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from wine_model.data import load_csv

MODEL_FILE = "model.joblib"
META_FILE = "meta.json"
TEST_SIZE = 0.2
# Metrics are rounded so that the file does not depend on the last bits of
# floating point (e.g. a different BLAS summation order).
DIGITS = 6


def build_pipeline() -> Pipeline:
    return Pipeline(
        [
            ("scaler", StandardScaler()),
            ("clf", LogisticRegression(C=1.0, max_iter=1000)),
        ]
    )


def train(data: str | Path, model_dir: str | Path, metrics_path: str | Path, seed: int = 42) -> dict:
    """Trains, writes the model, its metadata and the held-out metrics; returns the metrics."""
    data = Path(data)
    ds = load_csv(data)
    X_train, X_test, y_train, y_test = train_test_split(
        ds.X, ds.y, test_size=TEST_SIZE, stratify=ds.y, random_state=seed
    )

    model = build_pipeline()
    model.fit(X_train, y_train)

    proba = model.predict_proba(X_test)
    pred = model.classes_[proba.argmax(axis=1)]
    metrics = {
        "accuracy": round(float(accuracy_score(y_test, pred)), DIGITS),
        "f1_macro": round(float(f1_score(y_test, pred, average="macro")), DIGITS),
        "log_loss": round(float(log_loss(y_test, proba, labels=model.classes_)), DIGITS),
        "n_train": int(len(y_train)),
        "n_test": int(len(y_test)),
    }

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, model_dir / MODEL_FILE)
    meta = {
        "model_file": MODEL_FILE,
        "feature_names": ds.feature_names,
        "class_names": [str(c) for c in model.classes_],
        "sklearn_version": sklearn.__version__,
        "seed": seed,
        "data_sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
        "metrics": metrics,
    }
    write_json(model_dir / META_FILE, meta)

    metrics_path = Path(metrics_path)
    if metrics_path.parent != Path(""):
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(metrics_path, metrics)
    return metrics


def write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wine_model.train", description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/wine.csv", help="training CSV (default: %(default)s)")
    p.add_argument("--model-dir", default="model", help="where model.joblib and meta.json go (default: %(default)s)")
    p.add_argument("--metrics", default="metrics.json", help="held-out metrics JSON (default: %(default)s)")
    p.add_argument("--seed", type=int, default=42, help="split seed (default: %(default)s)")
    args = p.parse_args(argv)

    metrics = train(args.data, args.model_dir, args.metrics, seed=args.seed)
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
