"""Generate scipy reference cases for `mlops_release::stats`.

Writes `scipy_cases.json` next to this script. The Rust test
`crates/release/tests/stats.rs` reads it (and `shared/reference/stats_scipy.json`)
and checks every case to 1e-6 relative.

Rerun (from the repository root):

    python3 -m venv /tmp/scipyenv
    /tmp/scipyenv/bin/pip install scipy numpy
    /tmp/scipyenv/bin/python crates/release/tests/data/gen_scipy_cases.py

The cases are deterministic (fixed seeds); samples are rounded (6 decimals, 4 for
the samples above 10000 values, to keep the file small) BEFORE computing, so the
results are those of the rounded values stored in the file.
"""

import itertools
import json
import math
import pathlib
import platform

import numpy as np
import scipy
from scipy import stats

OUT = pathlib.Path(__file__).with_name("scipy_cases.json")


def rounded(xs, decimals=6):
    return [float(round(float(x), decimals)) for x in xs]


def two_sample_case(case_id, a, b):
    a = list(a)
    b = list(b)
    case = {"id": case_id, "a": a, "b": b}
    if len(a) >= 2 and len(b) >= 2 and (np.var(a) > 0 or np.var(b) > 0):
        t = stats.ttest_ind(a, b, equal_var=False)
        case["welch_t"] = {"statistic": float(t.statistic), "pvalue": float(t.pvalue)}
    if len(set(a) | set(b)) > 1:
        u = stats.mannwhitneyu(a, b, alternative="two-sided")
        ties = len(set(a) | set(b)) < len(a) + len(b)
        method = "asymptotic" if (min(len(a), len(b)) > 8 or ties) else "exact"
        case["mann_whitney_u"] = {
            "statistic": float(u.statistic),
            "pvalue": float(u.pvalue),
            "method": method,
        }
    k = stats.ks_2samp(a, b)
    case["ks_2samp"] = {
        "statistic": float(k.statistic),
        "pvalue": float(k.pvalue),
        "method": "exact" if max(len(a), len(b)) <= 10000 else "asymp",
    }
    return case


def two_sample_cases():
    rng = np.random.default_rng(20261204)
    cases = []
    # Tiny samples without ties: the exact Mann-Whitney path.
    for n1, n2 in [(1, 1), (1, 4), (2, 2), (2, 7), (3, 3), (3, 5), (4, 4), (5, 2),
                   (5, 8), (6, 6), (7, 3), (8, 8), (8, 9), (8, 30), (3, 200),
                   (8, 1000), (6, 4000)]:
        for shift in (0.0, 1.0):
            a = rounded(rng.normal(0, 1, n1))
            b = rounded(rng.normal(shift, 1, n2))
            if len(set(a) | set(b)) == n1 + n2:
                cases.append(two_sample_case(f"tiny_noties_{n1}_{n2}_shift{shift}", a, b))
    # Extreme separations (smallest exact p-values).
    for n1, n2 in [(8, 8), (5, 7), (4, 100)]:
        a = rounded(rng.normal(0, 1, n1))
        b = rounded(rng.normal(20, 1, n2))
        cases.append(two_sample_case(f"separated_{n1}_{n2}", a, b))
    # Tiny samples with ties: normal approximation with tie correction.
    for n1, n2 in [(2, 3), (3, 4), (5, 6), (8, 8), (4, 9)]:
        a = [float(x) for x in rng.integers(1, 5, n1)]
        b = [float(x) for x in rng.integers(1, 6, n2)]
        if len(set(a) | set(b)) > 1:
            cases.append(two_sample_case(f"tiny_ties_{n1}_{n2}", a, b))
    # Moderate and large samples, shifted and scaled.
    for n1, n2, shift, scale in [(9, 9, 0.5, 1.0), (20, 35, 0.3, 1.0),
                                 (50, 50, 0.0, 1.0), (100, 80, 0.2, 2.0),
                                 (1000, 1000, 0.1, 1.0), (3000, 3000, 0.0, 1.0),
                                 (1000, 3000, 0.0, 1.5), (4000, 5000, 0.05, 1.0),
                                 (5000, 5000, 0.2, 1.0), (2500, 1200, -0.3, 0.5)]:
        a = rounded(rng.normal(0, 1, n1))
        b = rounded(rng.normal(shift, scale, n2))
        cases.append(two_sample_case(f"normal_{n1}_{n2}_shift{shift}_scale{scale}", a, b))
    # Skewed (latency-like) samples.
    for n1, n2 in [(400, 600), (2000, 2000)]:
        a = rounded(rng.lognormal(3.0, 0.5, n1), 3)
        b = rounded(rng.lognormal(3.05, 0.55, n2), 3)
        cases.append(two_sample_case(f"lognormal_{n1}_{n2}", a, b))
    # Heavy ties (ratings, counts).
    for n1, n2 in [(30, 40), (500, 600), (2000, 5000)]:
        a = [float(x) for x in rng.choice([1, 2, 3, 4, 5], n1, p=[.1, .2, .3, .25, .15])]
        b = [float(x) for x in rng.choice([1, 2, 3, 4, 5], n2, p=[.1, .15, .3, .3, .15])]
        cases.append(two_sample_case(f"ratings_{n1}_{n2}", a, b))
    a = [float(x) for x in rng.poisson(2.0, 3000)]
    b = [float(x) for x in rng.poisson(2.1, 2000)]
    cases.append(two_sample_case("poisson_3000_2000", a, b))
    # One sample constant, the other not.
    cases.append(two_sample_case("one_constant_5_6", [1.0] * 5, rounded(rng.normal(1, 1, 6))))
    # Above 10000 values: the asymptotic kstwo path of ks_2samp.
    for n1, n2, shift in [(12000, 300, 0.0), (12000, 100, 0.4), (15000, 40, 0.3),
                          (10500, 10001, 0.0), (11000, 9000, 0.05), (20000, 2000, 0.0)]:
        a = rounded(rng.normal(0, 1, n1), 4)
        b = rounded(rng.normal(shift, 1, n2), 4)
        cases.append(two_sample_case(f"large_{n1}_{n2}_shift{shift}", a, b))
    return cases


def chi2_case(table, yates):
    res = stats.chi2_contingency(np.array(table), correction=yates)
    return {"statistic": float(res.statistic), "pvalue": float(res.pvalue)}


def table_cases():
    tables = []
    for t in itertools.product(range(0, 5), repeat=4):
        tables.append([[t[0], t[1]], [t[2], t[3]]])
    tables += [
        [[2500, 2500], [2400, 2600]], [[499, 4501], [553, 4447]],
        [[10000, 20], [9990, 35]], [[0, 5000], [3, 4997]], [[1, 99999], [9, 99991]],
        [[30, 970], [42, 958]], [[120, 30], [95, 55]], [[7, 0], [0, 9]],
        [[50000, 50000], [49500, 50500]], [[12, 5], [5, 12]], [[3, 1], [1, 3]],
        [[100, 100], [100, 100]], [[1, 0], [0, 1]], [[0, 0], [0, 5]],
    ]
    rng = np.random.default_rng(7)
    for _ in range(60):
        n = int(rng.choice([20, 200, 2000, 20000]))
        p1, p2 = rng.uniform(0.01, 0.99, 2)
        a = int(rng.binomial(n, p1))
        c = int(rng.binomial(n, p2))
        tables.append([[a, n - a], [c, n - c]])
    cases = []
    for table in tables:
        arr = np.array(table)
        empty_margin = 0 in arr.sum(axis=0) or 0 in arr.sum(axis=1)
        case = {"table": table}
        if empty_margin:
            case["error"] = "empty row or column"
        else:
            f = stats.fisher_exact(table)
            # JSON has no infinity: an infinite odds ratio (b·c = 0) is written as null.
            odds = float(f.statistic)
            case["fisher"] = {"statistic": odds if math.isfinite(odds) else None,
                              "pvalue": float(f.pvalue)}
            case["chi2"] = chi2_case(table, False)
            case["chi2_yates"] = chi2_case(table, True)
        cases.append(case)
    return cases


def psi_numpy(reference, current, bins):
    """PSI as `shared/reference/stats_scipy.json` `psi.formula`, with `bins` bins."""
    ref = np.asarray(reference)
    cur = np.asarray(current)
    edges = np.quantile(ref, [k / bins for k in range(1, bins)])
    pr = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=bins) / len(ref)
    pc = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=bins) / len(cur)
    pr = np.where(pr == 0, 1e-4, pr)
    pc = np.where(pc == 0, 1e-4, pc)
    return float(np.sum((pc - pr) * np.log(pc / pr)))


def psi_cases():
    rng = np.random.default_rng(99)
    cases = []
    specs = [
        ("normal_same", 1000, 1000, 10, lambda n: rng.normal(0, 1, n), lambda n: rng.normal(0, 1, n)),
        ("normal_shift", 5000, 4000, 10, lambda n: rng.normal(0, 1, n), lambda n: rng.normal(0.3, 1, n)),
        ("tiny", 7, 5, 10, lambda n: rng.normal(0, 1, n), lambda n: rng.normal(0, 1, n)),
        ("bins5", 300, 200, 5, lambda n: rng.normal(0, 1, n), lambda n: rng.normal(0.5, 1.2, n)),
        ("bins20", 2000, 2500, 20, lambda n: rng.exponential(1, n), lambda n: rng.exponential(1.2, n)),
        ("bins2", 50, 60, 2, lambda n: rng.normal(0, 1, n), lambda n: rng.normal(0.2, 1, n)),
        ("ratings", 800, 900, 10, lambda n: rng.integers(1, 6, n).astype(float),
         lambda n: rng.integers(2, 6, n).astype(float)),
        ("outside_range", 100, 100, 10, lambda n: rng.uniform(0, 1, n), lambda n: rng.uniform(0.5, 2, n)),
        ("constant_reference", 50, 40, 10, lambda n: np.full(n, 3.0), lambda n: rng.integers(2, 5, n).astype(float)),
    ]
    for name, nr, nc, bins, fr, fc in specs:
        ref = rounded(fr(nr))
        cur = rounded(fc(nc))
        cases.append({"id": f"{name}_{nr}_{nc}_bins{bins}", "reference": ref, "current": cur,
                      "bins": bins, "psi": psi_numpy(ref, cur, bins)})
    return cases


def main():
    data = {
        "meta": {
            "generator": "crates/release/tests/data/gen_scipy_cases.py",
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "notes": [
                "two_sample: welch_t = ttest_ind(a, b, equal_var=False); mann_whitney_u = "
                "mannwhitneyu(a, b) (auto method, U1); ks_2samp = ks_2samp(a, b) (auto method). "
                "A missing key means scipy's answer is undefined there (nan).",
                "tables: fisher = fisher_exact(table) (two-sided, odds ratio); chi2 / chi2_yates = "
                "chi2_contingency(table, correction=False/True). 'error' marks a table with an "
                "empty row or column.",
                "psi: the formula of shared/reference/stats_scipy.json psi.formula with k/bins.",
            ],
        },
        "two_sample": two_sample_cases(),
        "tables": table_cases(),
        "psi": psi_cases(),
    }
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    OUT.write_text(text + "\n")
    print(f"wrote {OUT} ({len(text) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
