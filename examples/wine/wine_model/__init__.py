"""Wine cultivar classifier: training script and an Open Inference Protocol (v2) server."""

__version__ = "0.1.0"

MODEL_NAME = "wine"
