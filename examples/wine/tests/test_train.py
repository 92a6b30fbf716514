import json

import joblib
import numpy as np
import sklearn

from wine_model.data import load_csv
from wine_model.train import main, train


def test_metrics_file(trained):
    metrics = json.loads(trained["metrics_path"].read_text())
    assert metrics == trained["metrics"]
    assert set(metrics) == {"accuracy", "f1_macro", "log_loss", "n_train", "n_test"}
    assert metrics["n_train"] == 142
    assert metrics["n_test"] == 36


def test_quality_on_held_out_split(trained):
    m = trained["metrics"]
    assert m["accuracy"] >= 0.9
    assert m["f1_macro"] >= 0.9
    assert m["log_loss"] <= 0.3


def test_training_is_deterministic(tmp_path, data_path, trained):
    train(data_path, tmp_path / "model", tmp_path / "metrics.json", seed=42)
    assert (tmp_path / "metrics.json").read_bytes() == trained["metrics_path"].read_bytes()
    assert (tmp_path / "model" / "meta.json").read_bytes() == (trained["model_dir"] / "meta.json").read_bytes()


def test_another_seed_is_good_too(tmp_path, data_path):
    # The quality bar should not hinge on one lucky split.
    other = train(data_path, tmp_path / "model", tmp_path / "metrics.json", seed=7)
    assert other["n_test"] == 36
    assert other["accuracy"] >= 0.85


def test_meta(trained, data_path):
    meta = json.loads((trained["model_dir"] / "meta.json").read_text())
    assert meta["feature_names"] == load_csv(data_path).feature_names
    assert meta["class_names"] == ["class_0", "class_1", "class_2"]
    assert meta["sklearn_version"] == sklearn.__version__


def test_saved_model_predicts(trained, data_path):
    model = joblib.load(trained["model_dir"] / "model.joblib")
    ds = load_csv(data_path)
    proba = model.predict_proba(ds.X)
    assert proba.shape == (178, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (model.predict(ds.X) == ds.y).mean() >= 0.95


def test_cli(tmp_path, data_path, capsys):
    rc = main(["--data", str(data_path), "--model-dir", str(tmp_path / "m"), "--metrics", str(tmp_path / "out" / "metrics.json")])
    assert rc == 0
    assert (tmp_path / "m" / "model.joblib").is_file()
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "out" / "metrics.json").read_text())
