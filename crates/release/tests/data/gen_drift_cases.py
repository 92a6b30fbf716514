"""Generate scipy reference cases for the drift statistics of `mlops_release::stats`.

Writes `drift_cases.json` next to this script; `crates/release/tests/drift_stats.rs`
checks every case to 1e-9 relative (1e-12 absolute near zero):

- wasserstein: scipy.stats.wasserstein_distance(a, b)
- chi_square_homogeneity: scipy.stats.chi2_contingency([a, b], correction=False)
  on the 2xk table with the all-zero columns dropped (statistic, p-value, dof);
  "error" where scipy refuses (fewer than two categories observed, an empty row)
- jensen_shannon: scipy.spatial.distance.jensenshannon(p, q, base=2)

Rerun (from the repository root):

    python3 -m venv /tmp/scipyenv
    /tmp/scipyenv/bin/pip install scipy numpy
    /tmp/scipyenv/bin/python crates/release/tests/data/gen_drift_cases.py

The cases are deterministic (fixed seeds); samples are rounded to 6 decimals
before computing.
"""

import json
import pathlib
import platform

import numpy as np
import scipy
from scipy import stats
from scipy.spatial import distance

OUT = pathlib.Path(__file__).with_name("drift_cases.json")


def rounded(xs):
    return [float(round(float(x), 6)) for x in xs]


def main():
    rng = np.random.default_rng(20261205)
    wasserstein = []
    for n1, n2, shift, scale in [(1, 1, 0, 1), (1, 5, 1, 1), (3, 3, 0, 1), (10, 7, 0.5, 1),
                                 (50, 50, 0, 2), (100, 80, 1, 1), (1000, 1000, 0.1, 1),
                                 (500, 2000, 0, 3), (5000, 4000, 2, 0.5)]:
        a = rounded(rng.normal(0, 1, n1))
        b = rounded(rng.normal(shift, scale, n2))
        wasserstein.append({"id": f"normal_{n1}_{n2}_{shift}_{scale}", "a": a, "b": b,
                            "distance": float(stats.wasserstein_distance(a, b))})
    # Ties and equal samples.
    for cid, a, b in [("ties", [1, 1, 1, 2, 2, 3], [1, 2, 2, 2, 3, 3, 3]),
                      ("equal", [0.5, 1.5, 2.5], [0.5, 1.5, 2.5]),
                      ("constant", [4, 4, 4], [4, 4]),
                      ("integers", list(rng.integers(0, 5, 300)), list(rng.integers(1, 6, 200)))]:
        a = [float(x) for x in a]
        b = [float(x) for x in b]
        wasserstein.append({"id": cid, "a": a, "b": b,
                            "distance": float(stats.wasserstein_distance(a, b))})

    chi2 = []
    tables = [
        ("two", [30, 70], [45, 55]),
        ("three", [10, 20, 30], [15, 15, 30]),
        ("five_shift", [50, 40, 30, 20, 10], [10, 20, 30, 40, 50]),
        ("same", [12, 7, 3], [24, 14, 6]),
        ("zero_column", [10, 0, 5], [3, 0, 9]),
        ("one_sided_category", [10, 5, 0], [10, 5, 8]),
        ("large", [100000, 200000, 300000, 5], [100500, 199000, 301000, 40]),
        ("many", list(rng.integers(0, 50, 30)), list(rng.integers(0, 50, 30))),
        ("one_category", [5, 0], [7, 0]),
        ("empty_row", [0, 0, 0], [1, 2, 3]),
    ]
    for cid, a, b in tables:
        a = [int(x) for x in a]
        b = [int(x) for x in b]
        case = {"id": cid, "a": a, "b": b}
        keep = [k for k in range(len(a)) if a[k] + b[k] > 0]
        if len(keep) < 2 or sum(a) == 0 or sum(b) == 0:
            case["error"] = True
        else:
            t = np.array([[a[k] for k in keep], [b[k] for k in keep]])
            r = stats.chi2_contingency(t, correction=False)
            case["statistic"] = float(r.statistic)
            case["pvalue"] = float(r.pvalue)
            case["dof"] = int(r.dof)
        chi2.append(case)

    js = []
    for cid, p, q in [
        ("identical", [1, 2, 3], [2, 4, 6]),
        ("disjoint", [1, 0], [0, 1]),
        ("half", [0.5, 0.5, 0], [0, 0.5, 0.5]),
        ("counts", [30, 70], [45, 55]),
        ("zeros", [10, 0, 5, 1], [3, 0, 9, 0]),
        ("random", list(rng.random(12)), list(rng.random(12))),
    ]:
        p = [float(x) for x in p]
        q = [float(x) for x in q]
        js.append({"id": cid, "p": p, "q": q,
                   "distance": float(distance.jensenshannon(p, q, base=2))})

    OUT.write_text(json.dumps({
        "meta": {"generator": "crates/release/tests/data/gen_drift_cases.py",
                 "python": platform.python_version(), "numpy": np.__version__,
                 "scipy": scipy.__version__},
        "wasserstein": wasserstein, "chi_square_homogeneity": chi2, "jensen_shannon": js,
    }, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
