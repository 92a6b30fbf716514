import json
import math
import re

import pytest
from fastapi.testclient import TestClient

from wine_model.server import create_app

INFER = "/v2/models/wine/infer"

CLASS_0 = [14.38, 1.87, 2.38, 12, 102, 3.3, 3.64, 0.29, 2.96, 7.5, 1.2, 3, 1547]
CLASS_1 = [11.03, 1.51, 2.2, 21.5, 85, 2.46, 2.17, 0.52, 2.01, 1.9, 1.71, 2.87, 407]
CLASS_2 = [12.79, 2.67, 2.48, 22, 112, 1.48, 1.36, 0.24, 1.26, 10.8, 0.48, 1.47, 480]


def request(rows, datatype="FP64", nested=False, **extra):
    data = [list(r) for r in rows] if nested else [v for r in rows for v in r]
    body = {"inputs": [{"name": "input-0", "shape": [len(rows), 13], "datatype": datatype, "data": data}]}
    body.update(extra)
    return body


def outputs_by_name(resp_json):
    return {o["name"]: o for o in resp_json["outputs"]}


# ---------------------------------------------------------------- health + metadata


def test_live(client):
    r = client.get("/v2/health/live")
    assert r.status_code == 200
    assert r.json() == {"live": True}


def test_ready(client):
    r = client.get("/v2/health/ready")
    assert r.status_code == 200
    assert r.json() == {"ready": True}


def test_model_ready(client):
    r = client.get("/v2/models/wine/ready")
    assert r.status_code == 200
    assert r.json() == {"name": "wine", "ready": True}


def test_server_metadata(client):
    r = client.get("/v2")
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "wine-model-server"
    assert isinstance(body["version"], str)
    assert body["extensions"] == []


def test_model_metadata(client):
    r = client.get("/v2/models/wine")
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "wine"
    assert body["versions"] == ["test-1"]
    assert body["platform"] == "sklearn"
    assert body["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 13]}]
    assert body["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
    ]
    assert body["parameters"]["input_datatypes"] == ["FP64", "FP32"]
    assert len(body["parameters"]["feature_names"]) == 13


def test_unknown_model_is_404(client):
    for method, path in [("GET", "/v2/models/iris"), ("GET", "/v2/models/iris/ready"), ("POST", "/v2/models/iris/infer")]:
        r = client.request(method, path, json=request([CLASS_0]))
        assert r.status_code == 404
        assert "iris" in r.json()["error"]


def test_unknown_path_has_error_body(client):
    r = client.get("/nope")
    assert r.status_code == 404
    assert "error" in r.json()


# ------------------------------------------------------------------------- infer


def test_infer_one_row_flat(client):
    r = client.post(INFER, json=request([CLASS_0], id="req-1"))
    assert r.status_code == 200
    body = r.json()
    assert body["model_name"] == "wine"
    assert body["model_version"] == "test-1"
    assert body["id"] == "req-1"
    outs = outputs_by_name(body)
    assert [o["name"] for o in body["outputs"]] == ["label", "probabilities"]
    assert outs["label"] == {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["class_0"]}
    proba = outs["probabilities"]
    assert proba["shape"] == [1, 3]
    assert proba["datatype"] == "FP64"
    assert math.isclose(sum(proba["data"]), 1.0, rel_tol=1e-9)
    assert proba["data"][0] > 0.99


def test_infer_nested_batch(client):
    r = client.post(INFER, json=request([CLASS_0, CLASS_1, CLASS_2], nested=True))
    assert r.status_code == 200
    body = r.json()
    assert "id" not in body
    outs = outputs_by_name(body)
    assert outs["label"]["data"] == ["class_0", "class_1", "class_2"]
    assert outs["label"]["shape"] == [3]
    assert outs["probabilities"]["shape"] == [3, 3]
    assert len(outs["probabilities"]["data"]) == 9


def test_flat_and_nested_agree(client):
    flat = client.post(INFER, json=request([CLASS_1, CLASS_2])).json()
    nested = client.post(INFER, json=request([CLASS_1, CLASS_2], nested=True)).json()
    assert flat == nested


def test_infer_fp32(client):
    r = client.post(INFER, json=request([CLASS_2], datatype="FP32"))
    assert r.status_code == 200
    assert outputs_by_name(r.json())["label"]["data"] == ["class_2"]


def test_infer_matches_model(client, trained, data_path):
    import joblib

    from wine_model.data import load_csv

    ds = load_csv(data_path)
    model = joblib.load(trained["model_dir"] / "model.joblib")
    rows = ds.X[:20].tolist()
    r = client.post(INFER, json=request(rows))
    assert r.status_code == 200
    assert outputs_by_name(r.json())["label"]["data"] == model.predict(ds.X[:20]).tolist()


def test_requested_outputs(client):
    r = client.post(INFER, json=request([CLASS_0], outputs=[{"name": "probabilities"}]))
    assert r.status_code == 200
    assert [o["name"] for o in r.json()["outputs"]] == ["probabilities"]


# ----------------------------------------------------------------- bad requests

BAD_BODIES = {
    "wrong input name": {"inputs": [{"name": "features", "shape": [1, 13], "datatype": "FP64", "data": CLASS_0}]},
    "wrong width": {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]},
    "1-d shape": {"inputs": [{"name": "input-0", "shape": [13], "datatype": "FP64", "data": CLASS_0}]},
    "empty batch": {"inputs": [{"name": "input-0", "shape": [0, 13], "datatype": "FP64", "data": []}]},
    "data shorter than shape": {"inputs": [{"name": "input-0", "shape": [2, 13], "datatype": "FP64", "data": CLASS_0}]},
    "nested rows wrong count": {"inputs": [{"name": "input-0", "shape": [2, 13], "datatype": "FP64", "data": [CLASS_0]}]},
    "nested row too short": {"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64", "data": [CLASS_0[:12]]}]},
    "non-numeric data": {"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64", "data": ["a"] * 13}]},
    "numeric strings": {"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64", "data": [str(v) for v in CLASS_0]}]},
    "booleans": {"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64", "data": [True] * 13}]},
    "null value": {"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64", "data": [None] + CLASS_0[1:]}]},
    "unsupported datatype": {"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "INT64", "data": CLASS_0}]},
    "shape not integers": {"inputs": [{"name": "input-0", "shape": [1.5, 13], "datatype": "FP64", "data": CLASS_0}]},
    "missing data": {"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64"}]},
    "missing inputs": {"id": "x"},
    "two inputs": {"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64", "data": CLASS_0}] * 2},
    "unknown output": {
        "inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64", "data": CLASS_0}],
        "outputs": [{"name": "logits"}],
    },
    "id not a string": {"id": 7, "inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64", "data": CLASS_0}]},
    "body is a list": [1, 2, 3],
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_request_is_400(client, body):
    r = client.post(INFER, json=body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert set(err) == {"error"}
    assert isinstance(err["error"], str) and err["error"]


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"",
        b"\xff\xfe",
        # Python's json module would accept these; JSON does not.
        b'{"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64", "data": [NaN, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]}]}',
        # Overflows FP64 to infinity.
        b'{"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64", "data": [1e400, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]}]}',
        # Finite as FP64, infinite as FP32.
        b'{"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP32", "data": [1e300, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]}]}',
    ],
    ids=["truncated", "empty", "not utf-8", "NaN", "FP64 overflow", "FP32 overflow"],
)
def test_invalid_json_or_values_is_400(client, raw):
    r = client.post(INFER, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert "error" in r.json()


def test_wrong_input_name_message(client):
    r = client.post(INFER, json=BAD_BODIES["wrong input name"])
    assert "input-0" in r.json()["error"]


# --------------------------------------------------------------- model not loaded


def test_not_ready_without_model(tmp_path):
    app = create_app(model_dir=tmp_path / "missing")
    with TestClient(app) as c:
        assert c.get("/v2/health/live").status_code == 200
        assert c.get("/v2/health/ready").status_code == 503
        assert c.get("/v2/models/wine/ready").status_code == 503
        r = c.post(INFER, json=request([CLASS_0]))
        assert r.status_code == 503
        assert "error" in r.json()
        assert "wine_model_ready 0" in c.get("/metrics").text


def test_model_dir_and_version_from_env(trained, monkeypatch):
    monkeypatch.setenv("MLOPS_MODEL_DIR", str(trained["model_dir"]))
    monkeypatch.setenv("MLOPS_MODEL_VERSION", "1.2.3")
    with TestClient(create_app()) as c:
        assert c.get("/v2/health/ready").status_code == 200
        assert c.post(INFER, json=request([CLASS_0])).json()["model_version"] == "1.2.3"


def test_version_defaults_to_dev(trained, monkeypatch):
    monkeypatch.delenv("MLOPS_MODEL_VERSION", raising=False)
    with TestClient(create_app(model_dir=trained["model_dir"])) as c:
        assert c.get("/v2/models/wine").json()["versions"] == ["dev"]


# ------------------------------------------------------------------------ metrics

SAMPLE = re.compile(r'^([a-z_]+)(\{.*\})? (\S+)$')


def parse_prometheus(text):
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def test_metrics(client):
    client.post(INFER, json=request([CLASS_0, CLASS_1]))
    client.post(INFER, json=BAD_BODIES["wrong input name"])
    client.get("/v2/health/ready")
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "# TYPE wine_requests_total counter" in r.text
    assert "# TYPE wine_request_duration_seconds histogram" in r.text
    s = parse_prometheus(r.text)
    infer = 'route="/v2/models/{model_name}/infer"'
    assert s['wine_requests_total{' + infer + ',code="200"}'] == 1
    assert s['wine_requests_total{' + infer + ',code="400"}'] == 1
    assert s['wine_requests_total{route="/v2/health/ready",code="200"}'] == 1
    assert s['wine_request_duration_seconds_count{' + infer + '}'] == 2
    assert s['wine_request_duration_seconds_bucket{' + infer + ',le="+Inf"}'] == 2
    assert s['wine_request_duration_seconds_sum{' + infer + '}'] > 0
    assert s['wine_predictions_total{label="class_0"}'] == 1
    assert s['wine_predictions_total{label="class_2"}'] == 0
    assert s["wine_model_ready"] == 1


def test_metrics_buckets_are_cumulative(client):
    for _ in range(3):
        client.get("/v2/health/live")
    s = parse_prometheus(client.get("/metrics").text)
    prefix = 'wine_request_duration_seconds_bucket{route="/v2/health/live",le="'
    counts = [v for k, v in s.items() if k.startswith(prefix)]
    assert counts == sorted(counts)
    assert counts[-1] == 3


def test_unmatched_paths_share_a_label(client):
    client.get("/random/a")
    client.get("/random/b")
    s = parse_prometheus(client.get("/metrics").text)
    assert s['wine_requests_total{route="unmatched",code="404"}'] == 2


# ----------------------------------------------------------------- smoke requests


def test_smoke_requests(client, smoke_cases):
    """data/smoke.json is what a deploy smoke test sends: it must pass here too."""
    assert any(c["expect"]["status"] == 400 for c in smoke_cases)
    for case in smoke_cases:
        r = client.request(case["method"], case["path"], json=case.get("body"))
        assert r.status_code == case["expect"]["status"], (case["name"], r.text)
        if case["expect"].get("oip"):
            body = r.json()
            assert body["model_name"] == "wine"
            outs = outputs_by_name(body)
            for name, data in case["expect"].get("outputs", {}).items():
                assert outs[name]["data"] == data, case["name"]
        if r.status_code >= 400:
            assert "error" in r.json(), case["name"]
