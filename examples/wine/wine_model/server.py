"""Open Inference Protocol (KServe v2) REST/JSON server for the wine model.

    MLOPS_MODEL_DIR=model python -m uvicorn wine_model.server:app --host 127.0.0.1 --port 8000

Endpoints:
    GET  /v2/health/live, /v2/health/ready, /v2
    GET  /v2/models/wine, /v2/models/wine/ready
    POST /v2/models/wine/infer
    GET  /metrics                       (Prometheus text format)

Environment:
    MLOPS_MODEL_DIR      directory with model.joblib + meta.json (default: model)
    MLOPS_MODEL_VERSION  version reported in responses (default: dev)
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from wine_model import MODEL_NAME, __version__

# uvicorn configures this logger, so messages show up next to its own.
log = logging.getLogger("uvicorn.error")

SERVER_NAME = "wine-model-server"
PLATFORM = "sklearn"
INPUT_NAME = "input-0"
LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"
OUTPUT_NAMES = (LABEL_OUTPUT, PROBABILITIES_OUTPUT)
DATATYPES = ("FP64", "FP32")


# --------------------------------------------------------------------------- model


@dataclass
class LoadedModel:
    pipeline: Any
    feature_names: list[str]
    class_names: list[str]
    version: str

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def predict(self, X: np.ndarray) -> tuple[list[str], np.ndarray]:
        proba = self.pipeline.predict_proba(X)
        labels = [self.class_names[i] for i in proba.argmax(axis=1)]
        return labels, proba


def load_model(model_dir: str | Path, version: str) -> LoadedModel:
    model_dir = Path(model_dir)
    meta = json.loads((model_dir / "meta.json").read_text())
    pipeline = joblib.load(model_dir / meta.get("model_file", "model.joblib"))
    trained_with = meta.get("sklearn_version")
    if trained_with and trained_with != sklearn.__version__:
        log.warning(
            "model was trained with scikit-learn %s but this is %s", trained_with, sklearn.__version__
        )
    class_names = [str(c) for c in meta["class_names"]]
    if [str(c) for c in pipeline.classes_] != class_names:
        raise ValueError(f"meta.json class_names {class_names} do not match the model's {list(pipeline.classes_)}")
    return LoadedModel(pipeline, list(meta["feature_names"]), class_names, version)


# ------------------------------------------------------------------ request parsing


class BadRequest(Exception):
    """A client error: answered with HTTP 400 and {"error": message}."""


@dataclass
class InferRequest:
    id: str | None
    X: np.ndarray  # (n_rows, n_features), float64
    outputs: list[str] | None  # None: all outputs


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:40] + "..."


def parse_infer_request(body: bytes, n_features: int) -> InferRequest:
    try:
        req = json.loads(body, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from None
    if not isinstance(req, dict):
        raise BadRequest("request body must be a JSON object")

    req_id = req.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise BadRequest("'id' must be a string")

    inputs = req.get("inputs")
    if inputs is None:
        raise BadRequest("missing 'inputs'")
    if not isinstance(inputs, list):
        raise BadRequest("'inputs' must be an array")
    if len(inputs) != 1:
        raise BadRequest(f"expected exactly 1 input tensor ('{INPUT_NAME}'), got {len(inputs)}")
    X = _parse_input(inputs[0], n_features)

    outputs = req.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise BadRequest("'outputs' must be an array")
        names = []
        for out in outputs:
            name = out.get("name") if isinstance(out, dict) else None
            if not isinstance(name, str):
                raise BadRequest("each requested output needs a 'name'")
            if name not in OUTPUT_NAMES:
                raise BadRequest(f"unknown output '{name}'; available outputs are {list(OUTPUT_NAMES)}")
            names.append(name)
        outputs = names
    return InferRequest(req_id, X, outputs)


def _parse_input(tensor: Any, n_features: int) -> np.ndarray:
    if not isinstance(tensor, dict):
        raise BadRequest("each input must be a JSON object")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise BadRequest("input is missing its 'name'")
    if name != INPUT_NAME:
        raise BadRequest(f"unknown input '{name}'; this model has one input named '{INPUT_NAME}'")

    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise BadRequest(f"input '{name}': unsupported datatype {_short(datatype)} (use FP64 or FP32)")

    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise BadRequest(f"input '{name}': 'shape' must be an array of integers, got {_short(shape)}")
    if len(shape) != 2 or shape[1] != n_features or shape[0] < 1:
        raise BadRequest(f"input '{name}': shape must be [N, {n_features}] with N >= 1, got {shape}")

    if "data" not in tensor:
        raise BadRequest(f"input '{name}' is missing its 'data'")
    flat: list[float] = []
    try:
        _flatten(tensor["data"], shape, 0, flat)
    except BadRequest as e:
        raise BadRequest(f"input '{name}': {e}") from None

    dtype = np.float32 if datatype == "FP32" else np.float64
    with np.errstate(over="ignore"):
        X = np.asarray(flat, dtype=dtype)
    if not np.isfinite(X).all():
        bad = flat[int(np.argmin(np.isfinite(X)))]
        raise BadRequest(f"input '{name}': value {bad!r} is not a finite {datatype} number")
    return X.astype(np.float64).reshape(shape[0], n_features)


def _flatten(data: Any, shape: list[int], depth: int, out: list[float]) -> None:
    """Appends the numbers of `data` (flat row-major, or nested like `shape`) to `out`."""
    if not isinstance(data, list):
        raise BadRequest("'data' must be an array")
    if data and isinstance(data[0], list):
        if depth + 1 >= len(shape):
            raise BadRequest("'data' is nested deeper than its shape")
        if len(data) != shape[depth]:
            raise BadRequest(f"'data' has {len(data)} elements at depth {depth} but shape {shape} needs {shape[depth]}")
        for item in data:
            _flatten(item, shape, depth + 1, out)
        return
    expected = math.prod(shape[depth:])
    if len(data) != expected:
        what = f"has {len(data)} values" if depth == 0 else f"has a row of {len(data)} values"
        raise BadRequest(f"'data' {what} but shape {shape} needs {expected}")
    for v in data:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BadRequest(f"'data' must contain only numbers, found {_short(v)}")
        try:
            out.append(float(v))
        except OverflowError:
            raise BadRequest(f"value {_short(v)} is too large") from None


def build_response(model: LoadedModel, req: InferRequest) -> tuple[dict, list[str]]:
    labels, proba = model.predict(req.X)
    n = len(labels)
    wanted = OUTPUT_NAMES if req.outputs is None else req.outputs
    outputs = []
    for name in OUTPUT_NAMES:
        if name not in wanted:
            continue
        if name == LABEL_OUTPUT:
            outputs.append({"name": LABEL_OUTPUT, "shape": [n], "datatype": "BYTES", "data": labels})
        else:
            outputs.append(
                {
                    "name": PROBABILITIES_OUTPUT,
                    "shape": [n, len(model.class_names)],
                    "datatype": "FP64",
                    "data": proba.ravel().tolist(),
                }
            )
    resp: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": model.version}
    if req.id is not None:
        resp["id"] = req.id
    resp["outputs"] = outputs
    return resp, labels


# ------------------------------------------------------------------------ metrics

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class Metrics:
    """A few hand-rolled Prometheus metrics (text exposition format 0.0.4)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = {}
        # route -> [bucket counts..., sum, count]
        self.durations: dict[str, list[float]] = {}
        self.predictions: dict[str, int] = {}
        self.model_ready = 0

    def observe_request(self, route: str, code: int, seconds: float) -> None:
        with self._lock:
            key = (route, str(code))
            self.requests[key] = self.requests.get(key, 0) + 1
            h = self.durations.setdefault(route, [0] * len(BUCKETS) + [0.0, 0])
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1

    def init_labels(self, class_names: list[str]) -> None:
        with self._lock:
            for c in class_names:
                self.predictions.setdefault(c, 0)

    def observe_predictions(self, labels: list[str]) -> None:
        with self._lock:
            for label in labels:
                self.predictions[label] = self.predictions.get(label, 0) + 1

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP wine_requests_total HTTP requests handled, by route and status code.",
                "# TYPE wine_requests_total counter",
            ]
            for (route, code), n in sorted(self.requests.items()):
                lines.append(f'wine_requests_total{{route="{_label(route)}",code="{code}"}} {n}')
            lines += [
                "# HELP wine_request_duration_seconds Time to handle an HTTP request, by route.",
                "# TYPE wine_request_duration_seconds histogram",
            ]
            for route, h in sorted(self.durations.items()):
                r = _label(route)
                for bound, n in zip(BUCKETS, h):
                    lines.append(f'wine_request_duration_seconds_bucket{{route="{r}",le="{bound}"}} {n}')
                lines.append(f'wine_request_duration_seconds_bucket{{route="{r}",le="+Inf"}} {h[-1]}')
                lines.append(f'wine_request_duration_seconds_sum{{route="{r}"}} {_num(h[-2])}')
                lines.append(f'wine_request_duration_seconds_count{{route="{r}"}} {h[-1]}')
            lines += [
                "# HELP wine_predictions_total Rows scored, by predicted class.",
                "# TYPE wine_predictions_total counter",
            ]
            for label, n in sorted(self.predictions.items()):
                lines.append(f'wine_predictions_total{{label="{_label(label)}"}} {n}')
            lines += [
                "# HELP wine_model_ready 1 when the model is loaded and serving.",
                "# TYPE wine_model_ready gauge",
                f"wine_model_ready {self.model_ready}",
            ]
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """ASGI middleware: counts requests and times them, labelled by route template."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            # The router stores the matched route in the scope; unmatched paths
            # share one label so that random URLs do not blow up cardinality.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe_request(route, status, time.perf_counter() - start)


# ---------------------------------------------------------------------------- app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(model_dir: str | Path | None = None, model_version: str | None = None) -> FastAPI:
    """Builds the app. Unset arguments are read from the environment at startup."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        directory = Path(model_dir if model_dir is not None else os.environ.get("MLOPS_MODEL_DIR", "model"))
        version = model_version if model_version is not None else os.environ.get("MLOPS_MODEL_VERSION", "dev")
        try:
            app.state.model = load_model(directory, version)
        except Exception as e:  # keep serving health + metrics; ready says 503
            log.error("could not load the model from %s: %s", directory, e)
            app.state.model = None
        else:
            metrics.init_labels(app.state.model.class_names)
            metrics.model_ready = 1
            log.info("model '%s' version %s loaded from %s", MODEL_NAME, version, directory)
        yield
        metrics.model_ready = 0

    app = FastAPI(title="wine model (Open Inference Protocol v2)", version=__version__, lifespan=lifespan)
    app.state.model = None
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, str(exc.errors()))

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return _error(400, str(exc))

    def model_or_error(request: Request, model_name: str) -> LoadedModel | JSONResponse:
        if model_name != MODEL_NAME:
            return _error(404, f"model '{model_name}' not found; this server serves '{MODEL_NAME}'")
        model = request.app.state.model
        if model is None:
            return _error(503, f"model '{MODEL_NAME}' is not loaded")
        return model

    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready(request: Request):
        if request.app.state.model is None:
            return JSONResponse({"ready": False}, status_code=503)
        return {"ready": True}

    @app.get("/v2")
    async def server_metadata() -> dict:
        return {"name": SERVER_NAME, "version": __version__, "extensions": []}

    @app.get("/v2/models/{model_name}")
    async def model_metadata(request: Request, model_name: str):
        model = model_or_error(request, model_name)
        if isinstance(model, JSONResponse):
            return model
        return {
            "name": MODEL_NAME,
            "versions": [model.version],
            "platform": PLATFORM,
            "inputs": [{"name": INPUT_NAME, "datatype": "FP64", "shape": [-1, model.n_features]}],
            "outputs": [
                {"name": LABEL_OUTPUT, "datatype": "BYTES", "shape": [-1]},
                {"name": PROBABILITIES_OUTPUT, "datatype": "FP64", "shape": [-1, len(model.class_names)]},
            ],
            # Not part of the protocol's metadata, but handy for whoever calls us.
            "parameters": {
                "input_datatypes": list(DATATYPES),
                "feature_names": model.feature_names,
                "class_names": model.class_names,
            },
        }

    @app.get("/v2/models/{model_name}/ready")
    async def model_ready(request: Request, model_name: str):
        if model_name != MODEL_NAME:
            return _error(404, f"model '{model_name}' not found; this server serves '{MODEL_NAME}'")
        is_ready = request.app.state.model is not None
        return JSONResponse({"name": MODEL_NAME, "ready": is_ready}, status_code=200 if is_ready else 503)

    @app.post("/v2/models/{model_name}/infer")
    async def infer(request: Request, model_name: str):
        model = model_or_error(request, model_name)
        if isinstance(model, JSONResponse):
            return model
        # The body is parsed by hand so that every malformed request gets a 400
        # with an OIP error body (FastAPI's own validation would answer 422).
        req = parse_infer_request(await request.body(), model.n_features)
        resp, labels = build_response(model, req)
        metrics.observe_predictions(labels)
        return resp

    @app.get("/metrics")
    async def prometheus_metrics() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


app = create_app()
