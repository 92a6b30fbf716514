import csv

import numpy as np
import pytest

from wine_model.data import load_csv

EXPECTED_FEATURES = [
    "alcohol",
    "malic_acid",
    "ash",
    "alcalinity_of_ash",
    "magnesium",
    "total_phenols",
    "flavanoids",
    "nonflavanoid_phenols",
    "proanthocyanins",
    "color_intensity",
    "hue",
    "od280_od315_of_diluted_wines",
    "proline",
]


@pytest.fixture(scope="module")
def ds(data_path):
    return load_csv(data_path)


def test_columns(data_path):
    with data_path.open(newline="") as f:
        header = next(csv.reader(f))
    assert header == EXPECTED_FEATURES + ["target"]


def test_shape(ds):
    assert ds.X.shape == (178, 13)
    assert ds.y.shape == (178,)
    assert ds.feature_names == EXPECTED_FEATURES


def test_no_missing_values(data_path, ds):
    with data_path.open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert all(cell.strip() for row in rows for cell in row)
    assert np.isfinite(ds.X).all()


def test_three_classes(ds):
    classes, counts = np.unique(ds.y, return_counts=True)
    assert list(classes) == ["class_0", "class_1", "class_2"]
    assert dict(zip(classes, counts.tolist())) == {"class_0": 59, "class_1": 71, "class_2": 48}


def test_features_are_positive(ds):
    # All the chemistry measurements are strictly positive quantities.
    assert (ds.X > 0).all()


def test_no_duplicate_rows(ds):
    assert len(np.unique(ds.X, axis=0)) == len(ds.X)


def test_bad_csv_is_rejected(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,target\n1.0,oops,class_0\n")
    with pytest.raises(ValueError, match="bad.csv:2"):
        load_csv(bad)
