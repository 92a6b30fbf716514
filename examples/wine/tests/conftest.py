import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from wine_model.server import create_app
from wine_model.train import train

EXAMPLE_DIR = Path(__file__).resolve().parent.parent
DATA = EXAMPLE_DIR / "data" / "wine.csv"
SMOKE = EXAMPLE_DIR / "data" / "smoke.json"


@pytest.fixture(scope="session")
def data_path() -> Path:
    return DATA


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict:
    """Trains once per test session into a temporary directory."""
    out = tmp_path_factory.mktemp("trained")
    metrics = train(DATA, out / "model", out / "metrics.json", seed=42)
    return {"model_dir": out / "model", "metrics_path": out / "metrics.json", "metrics": metrics}


@pytest.fixture()
def client(trained):
    app = create_app(model_dir=trained["model_dir"], model_version="test-1")
    with TestClient(app) as c:  # the `with` runs startup, which loads the model
        yield c


@pytest.fixture(scope="session")
def smoke_cases() -> list:
    return json.loads(SMOKE.read_text())
