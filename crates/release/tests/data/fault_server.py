"""A model server whose faults come from its model file, for release tests.

Open Inference Protocol v2 over HTTP/1.1 keep-alive: GET /v2/health/ready,
POST /v2/models/<name>/infer answering the sum of each input row as the
prediction. model.json: {"error_every": N (every N-th inference is a 500;
0: never), "latency_ms": L (added to every inference), "offset": X (added
to every prediction)}.

Usage: fault_server.py --model PATH --host HOST --port PORT
"""

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    with open(args.model) as f:
        model = json.load(f)
    error_every = int(model.get("error_every", 0))
    latency = float(model.get("latency_ms", 0)) / 1000.0
    offset = float(model.get("offset", 0.0))
    lock = threading.Lock()
    count = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # One write per response, sent at once: headers and body written
        # apart meet the gateway's delayed ACK under Nagle's algorithm and
        # wait 40 ms — latency the candidate would be blamed for.
        wbufsize = 1 << 16
        disable_nagle_algorithm = True

        def log_message(self, *a):
            pass

        def send(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/v2/health/ready":
                self.send(200, {"ready": True})
            else:
                self.send(404, {"error": "not found"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            with lock:
                count[0] += 1
                n = count[0]
            if latency:
                time.sleep(latency)
            if error_every and n % error_every == 0:
                self.send(500, {"error": "injected"})
                return
            try:
                req = json.loads(raw)
                data = req["inputs"][0]["data"]
                shape = req["inputs"][0].get("shape", [1, len(data)])
                rows = shape[0] if len(shape) > 1 else 1
                width = max(1, len(data) // max(1, rows))
                out = [sum(data[i * width:(i + 1) * width]) + offset for i in range(rows)]
            except (ValueError, KeyError, IndexError, TypeError) as e:
                self.send(400, {"error": str(e)})
                return
            self.send(200, {"model_name": "m", "outputs": [
                {"name": "p", "shape": [len(out)], "datatype": "FP64", "data": out}]})

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
