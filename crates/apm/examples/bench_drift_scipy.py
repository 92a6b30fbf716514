"""scipy's side of bench_drift.rs: load two CSVs, then per feature KS
(ks_2samp), Wasserstein-1 (wasserstein_distance) and PSI over 10 quantile
bins of the reference (numpy's default quantile, the formula of
mlops_release::stats::psi). Prints {"load_s", "tests_s", "f0_ks"} as JSON."""

import json
import sys
import time

import numpy as np
from scipy import stats


def psi(reference, current, bins=10):
    edges = np.quantile(reference, [k / bins for k in range(1, bins)])
    p = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=bins) / len(reference)
    q = np.bincount(np.searchsorted(edges, current, side="right"), minlength=bins) / len(current)
    p = np.where(p == 0, 1e-4, p)
    q = np.where(q == 0, 1e-4, q)
    return float(np.sum((q - p) * np.log(q / p)))


def main():
    start = time.perf_counter()
    r = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1)
    c = np.loadtxt(sys.argv[2], delimiter=",", skiprows=1)
    load = time.perf_counter() - start
    start = time.perf_counter()
    f0_ks = None
    for f in range(r.shape[1]):
        ks = stats.ks_2samp(r[:, f], c[:, f])
        stats.wasserstein_distance(r[:, f], c[:, f])
        psi(r[:, f], c[:, f])
        if f == 0:
            f0_ks = float(ks.statistic)
    tests = time.perf_counter() - start
    print(json.dumps({"load_s": load, "tests_s": tests, "f0_ks": f0_ks}))


if __name__ == "__main__":
    main()
