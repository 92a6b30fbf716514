"""Generate scipy reference cases for `mlops_release::stats`.

Writes `scipy_cases.json` and `scipy_extreme_cases.json` next to this script.
The Rust test `crates/release/tests/stats.rs` reads them (and
`shared/reference/stats_scipy.json`) and checks every case to 1e-6 relative.

`scipy_extreme_cases.json` holds the inputs at the edges of f64 and of the
counts: Welch t-tests on samples of magnitude 1e-300..1e300 and Fisher's exact
test on tables with margins of 1e6..1e9 (mirrored tables, zero cells, rare
events).

Rerun (from the repository root):

    python3 -m venv /tmp/scipyenv
    /tmp/scipyenv/bin/pip install scipy numpy
    /tmp/scipyenv/bin/python crates/release/tests/data/gen_scipy_cases.py

The cases are deterministic (fixed seeds); samples are rounded (6 decimals, 4 for
the samples above 10000 values, to keep the file small) BEFORE computing, so the
results are those of the rounded values stored in the file.
"""

import decimal
import fractions
import itertools
import json
import math
import pathlib
import platform

import numpy as np
import scipy
from scipy import stats

OUT = pathlib.Path(__file__).with_name("scipy_cases.json")
EXTREME_OUT = pathlib.Path(__file__).with_name("scipy_extreme_cases.json")


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


def finite_or_name(x):
    """A float for JSON, or "nan" / "inf" / "-inf" (JSON has no such numbers)."""
    x = float(x)
    return x if math.isfinite(x) else str(x)


def welch_extreme_cases():
    """Welch t-tests far from 1 in magnitude.

    scipy squares v_a = s_a^2/n_a and v_b as they are: below ~1e-75 or above
    ~1e75 the squares underflow or overflow, its df becomes 0/0 or inf/inf and
    it substitutes df = 1 (and subnormal variances lose digits). The Rust
    function is scale-free, so each case stores scipy's raw answer ("scipy",
    where a non-finite value is written as the string "nan", "inf" or "-inf")
    and scipy's answer on the same samples multiplied by 2^k ("rescaled",
    `k` = "rescale_exponent", exact in f64 (k bringing the largest magnitude
    to about 1; values below 2^-900 of the largest may lose digits there, which
    changes nothing they enter). The test checks the Rust result against
    "rescaled".
    """
    rng = np.random.default_rng(31337)
    samples = [
        ("tiny_pair_1e-160", [0.0, 1e-160], [0.0, 3e-160]),
        ("huge_cancelling_1e100", [1e100, -1e100, 3.0], [0.0, 1.0]),
    ]
    for exponent in (-300, -250, -200, -160, -100, -40, 40, 100, 160, 200, 250, 300):
        for n1, n2, shift, scale in ((2, 3, 1.0, 1.0), (5, 4, 0.5, 3.0), (30, 20, 0.2, 0.5)):
            a = [float(x) * 10.0 ** exponent for x in rng.normal(0, 1, n1)]
            b = [float(x) * 10.0 ** exponent for x in rng.normal(shift, scale, n2)]
            samples.append((f"normal_{n1}_{n2}_1e{exponent}", a, b))
    # The two samples at very different magnitudes.
    for ea, eb in ((-300, 300), (-200, 0), (0, 250), (-150, -160), (150, 160)):
        a = [float(x) * 10.0 ** ea for x in rng.normal(1, 1, 4)]
        b = [float(x) * 10.0 ** eb for x in rng.normal(1, 1, 6)]
        samples.append((f"mixed_1e{ea}_1e{eb}", a, b))
    cases = []
    for case_id, a, b in samples:
        raw = stats.ttest_ind(a, b, equal_var=False)
        largest = max(abs(v) for v in a + b)
        k = -math.frexp(largest)[1]
        sa = [math.ldexp(v, k) for v in a]
        sb = [math.ldexp(v, k) for v in b]
        # Exact, except values below 2^-900 of the largest (mixed magnitudes),
        # which may lose digits but are negligible in every sum they enter.
        assert all(math.ldexp(v, -k) == w or abs(w) < math.ldexp(largest, -900)
                   for v, w in zip(sa + sb, a + b)), case_id
        scaled = stats.ttest_ind(sa, sb, equal_var=False)
        cases.append({
            "id": case_id, "a": a, "b": b,
            "scipy": {key: finite_or_name(value) for key, value in
                      (("statistic", raw.statistic), ("pvalue", raw.pvalue), ("df", raw.df))},
            "rescale_exponent": k,
            "rescaled": {"statistic": float(scaled.statistic), "pvalue": float(scaled.pvalue),
                         "df": float(scaled.df)},
        })
    return cases


def fisher_reference(table):
    """Fisher's two-sided p-value with scipy 1.17's rule, in 50-digit decimals.

    scipy's hypergeom pmf is good to only ~1e-7 relative at margins of 1e9, so
    where two tables' probabilities differ by less than that (a near-mirror
    table, e.g. [[1, 1e9], [6, 1e9]]: P(6)/P(1) = 1 - 2.5e-8) scipy may count
    the wrong one and be off by far more than 1e-6. This is the same rule
    (p = 1 when P(a) is within 1e-14 of the mode's; otherwise a's own tail plus
    the tables beyond the mode less likely than P(a)·(1 + 1e-14), strictly when
    a is below the mode) with the pmf from the ratio recurrence
    P(x+1)/P(x) = (n1-x)(K-x) / ((x+1)(n2-K+x+1)) in 50 digits, checked against
    exact fractions where the support is small.
    """
    (a, b), (c, d) = table
    n1, n2, k = a + b, c + d, a + c
    lo, hi = max(0, k - n2), min(k, n1)
    mode = (k + 1) * (n1 + 1) // (n1 + n2 + 2)
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        tiny = decimal.Decimal("1e-40")

        def up(x):
            return decimal.Decimal((n1 - x) * (k - x)) / decimal.Decimal((x + 1) * (n2 - k + x + 1))

        def down(x):
            return decimal.Decimal(x * (n2 - k + x)) / decimal.Decimal((n1 - x + 1) * (k - x + 1))

        def walk(x, w, step, until):
            """Weights relative to the mode from x (weight w) outward until until(x, w)."""
            out = {}
            while True:
                out[x] = w
                nxt = x + step
                if nxt < lo or nxt > hi or until(x, w):
                    return out
                w *= up(x) if step > 0 else down(x)
                x = nxt

        # The mode's side of a first, far enough to reach a.
        side = -1 if a < mode else 1
        weights = walk(mode, decimal.Decimal(1), side, lambda x, w: x == a)
        pa = weights[a]
        if abs(pa - 1) <= decimal.Decimal("1e-14"):
            return 1.0, mode
        gamma = 1 + decimal.Decimal("1e-14")
        # Continue both ways until the terms are negligible relative to the
        # mode and beyond P(a)·gamma on the other side.
        floor = min(pa * gamma, decimal.Decimal(1)) * tiny
        weights.update(walk(a, pa, side, lambda x, w: w < floor))
        weights.update(walk(mode, decimal.Decimal(1), -side, lambda x, w: w < floor))
        total = sum(weights.values())
        if side < 0:
            p = sum(w for x, w in weights.items() if x <= a or (x > mode and w < pa * gamma))
        else:
            p = sum(w for x, w in weights.items() if x >= a or (x < mode and w <= pa * gamma))
        return float(min(p / total, 1)), mode


def fisher_exact_fraction(table):
    """The same rule in exact rationals (small supports only)."""
    (a, b), (c, d) = table
    n1, n2, k = a + b, c + d, a + c
    lo, hi = max(0, k - n2), min(k, n1)
    mode = (k + 1) * (n1 + 1) // (n1 + n2 + 2)
    pmf = {x: math.comb(n1, x) * math.comb(n2, k - x) for x in range(lo, hi + 1)}
    pa, pm = fractions.Fraction(pmf[a]), pmf[mode]
    if abs(pa - pm) <= fractions.Fraction(1, 10**14) * pm:
        return 1.0
    gamma = 1 + fractions.Fraction(1, 10**14)
    if a < mode:
        p = sum(w for x, w in pmf.items() if x <= a or (x > mode and w < pa * gamma))
    else:
        p = sum(w for x, w in pmf.items() if x >= a or (x < mode and w <= pa * gamma))
    return float(fractions.Fraction(p, sum(pmf.values())))


def fisher_large_cases():
    """Fisher's exact test on tables with margins of 1e6..1e9."""
    tables = [
        [[0, 300_000_000], [4, 300_000_000]],
        [[1, 1_000_000_000], [6, 1_000_000_000]],
        [[5, 1_000_000_000], [20, 1_000_000_000]],
        [[3, 200_000_000], [0, 200_000_001]],
    ]
    rng = np.random.default_rng(4242)
    for n in (10**6, 10**7, 10**8, 10**9):
        # Zero cells and rare events (conversion counts out of huge traffic).
        for k in (1, 2, 5, 9):
            tables.append([[0, n], [k, n - k]])
        tables.append([[int(rng.integers(1, 40)), n], [0, n + int(rng.integers(0, 3))]])
        for _ in range(3):
            a, c = (int(v) for v in rng.integers(0, 60, 2))
            if a + c > 0:
                tables.append([[a, n - a], [c, n - c]])
        # Mirrored tables of a symmetric design: P(table) = P(mirror) exactly.
        sd = math.sqrt(n) / 4
        for z in (0.5, 2.0, 3.5):
            d = max(1, int(z * sd))
            half = n // 2
            tables.append([[half - d, half + d], [half + d, half - d]])
        # Equal columns (the other symmetry), unequal rows.
        m = n // 4
        d = max(1, int(2.5 * math.sqrt(m) / 2))
        tables.append([[m + d, 3 * m - d], [m - d, 3 * m + d]])
        # Random rates, unequal rows.
        for p in (0.001, 0.3):
            n2 = int(n * rng.uniform(0.5, 2))
            a = int(rng.binomial(n, p))
            c = int(rng.binomial(n2, p * rng.uniform(0.995, 1.005)))
            tables.append([[a, n - a], [c, n2 - c]])
    cases = []
    for table in tables:
        f = stats.fisher_exact(table)
        odds = float(f.statistic)
        reference, _ = fisher_reference(table)
        (a, b), (c, d) = table
        if min(a + c, b + d, a + b, c + d) <= 60:
            exact = fisher_exact_fraction(table)
            assert abs(exact - reference) <= 1e-12 * exact, (table, exact, reference)
        scipy_p = float(f.pvalue)
        case = {"table": table,
                "fisher": {"statistic": odds if math.isfinite(odds) else None,
                           "pvalue": scipy_p},
                "reference_pvalue": reference}
        # scipy's pmf noise (~1e-7 at 1e9) decided a near tie the other way.
        if abs(scipy_p - reference) > 1e-6 * reference:
            case["scipy_splits_near_tie"] = True
        cases.append(case)
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
    extreme = {
        "meta": {
            "generator": "crates/release/tests/data/gen_scipy_cases.py",
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "notes": [
                "welch: scipy = ttest_ind(a, b, equal_var=False) as given; rescaled = the same "
                "on a and b multiplied by 2^rescale_exponent (exact), which the scale-free "
                "Rust function must match.",
                "fisher: fisher_exact(table) (two-sided, odds ratio; null for +inf) on tables "
                "with margins of 1e6..1e9; reference_pvalue: scipy's rule in 50-digit "
                "arithmetic (fisher_reference); scipy_splits_near_tie marks the tables where "
                "scipy's pmf noise (~1e-7 relative at 1e9) decided a near tie wrongly and "
                "its p-value is off by more than 1e-6.",
            ],
        },
        "welch": welch_extreme_cases(),
        "fisher": fisher_large_cases(),
    }
    text = json.dumps(extreme, separators=(",", ":"), allow_nan=False)
    EXTREME_OUT.write_text(text + "\n")
    print(f"wrote {EXTREME_OUT} ({len(text) / 1e6:.3f} MB)")


if __name__ == "__main__":
    main()
