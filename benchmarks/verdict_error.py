"""How often would the verdict separate configurations that are truly equal? A simulation of the
rule in src/reporting (the paired t-test of `stats.paired`, p adjusted by `stats.holm`), against the
rules it replaced, on seeds drawn from a model of a study: each seed moves every configuration alike
(data order, head init: the pairing removes it) and adds its own noise to each.

    python benchmarks/verdict_error.py --draws 2000 --effect 3      # the tables in docs/verdict.md

For each number of configurations k and seeds n: the chance that the best by mean is claimed
separated from at least one of the others when all k are equal (a false claim; the verdict claims
5%), and, with one configuration truly better by `--effect` noise SDs, the chance that the verdict
names it alone as best (what the correction costs). Then the one-seed rule: k accuracies drawn as
binomial counts of the same true accuracy on the same number of images (independent errors, the
case where two models share no hard images), and how often the best's Wilson interval clears
another's at 95% each and at the verdict's level (`comparisons.Family.level`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from src.reporting.stats import holm, paired, wilson  # noqa: E402

RULES = ("raw p (before)", "Holm over the best's pairs", "Holm over every pair (now)")


def separated(x: np.ndarray) -> list[set[int]]:
    """Under each rule, the configurations separated from the best by mean."""
    k = len(x)
    best = int(np.argmax(x.mean(axis=1)))
    p = {(i, j): paired(list(x[i]), list(x[j]))["p"] for i in range(k) for j in range(i + 1, k)}
    mine = [q for q in p if best in q]
    of_best = dict(zip(mine, holm([p[q] for q in mine])))
    every = dict(zip(p, holm(list(p.values()))))

    def other(q: tuple[int, int]) -> int:
        return q[0] if q[1] == best else q[1]

    return [{other(q) for q in mine if p[q] < 0.05}, {other(q) for q in mine if of_best[q] < 0.05},
            {other(q) for q in mine if every[q] < 0.05}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=4000)
    ap.add_argument("--configs", type=int, nargs="+", default=[2, 3, 5, 7])
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 5])
    ap.add_argument("--effect", type=float, default=2.0, help="the better configuration's lead, in noise SDs")
    ap.add_argument("--one-seed", type=int, nargs="+", default=[3, 7, 20], help="configurations, one seed each")
    ap.add_argument("--rng", type=int, default=0)
    ap.add_argument("--splits", action="store_true", help="only the answer's two accuracies (validation, test) together")
    args = ap.parse_args()
    rng = np.random.default_rng(args.rng)
    if args.splits:
        return _splits(args, rng)
    print("| configurations | seeds | " + " | ".join(f"false separation: {r}" for r in RULES)
          + " | " + " | ".join(f"true best named alone: {r}" for r in RULES) + " |")
    print("|---|---|" + "---|" * (2 * len(RULES)))
    for k in args.configs:
        for n in args.seeds:
            false, found = [0] * len(RULES), [0] * len(RULES)
            for _ in range(args.draws):
                seed_effect = 2.0 * rng.normal(size=n)
                equal = rng.normal(size=(k, n)) + seed_effect
                for r, sep in enumerate(separated(equal)):
                    false[r] += bool(sep)
                better = rng.normal(size=(k, n)) + seed_effect
                better[0] += args.effect
                truly = int(np.argmax(better.mean(axis=1))) == 0
                for r, sep in enumerate(separated(better)):
                    found[r] += truly and len(sep) == k - 1
            cells = [f"{100 * f / args.draws:.1f} %" for f in false] + [f"{100 * f / args.draws:.1f} %" for f in found]
            print(f"| {k} | {n} | " + " | ".join(cells) + " |", flush=True)
    print("\n| configurations (one seed) | images | true accuracy | false separation: 95% each (before) | "
          "false separation: 1 - 0.05/k each (now) |")
    print("|---|---|---|---|---|")
    for k in args.one_seed:
        for n, acc in ((360, 0.9), (360, 0.97), (100, 0.8)):
            counts = [rng.binomial(n, acc, size=k) for _ in range(args.draws)]
            rates = [sum(_clears(c, n, level) for c in counts) / args.draws for level in (0.95, 1 - 0.05 / k)]
            print(f"| {k} | {n} | {acc} | {100 * rates[0]:.1f} % | {100 * rates[1]:.1f} % |", flush=True)


def _splits(args: argparse.Namespace, rng: np.random.Generator) -> None:
    """The answer names a best on validation and on test, each judged within its own family: how often
    equal configurations are separated on either. Each configuration on each seed is one trained model
    (its own normal effect, seen by both splits) measured on two image sets (each adds its own noise of
    the same SD); the seed moves every configuration alike, as above."""
    print("| configurations | seeds | false separation: validation | on test | on either: the answer |")
    print("|---|---|---|---|---|")
    for k in args.configs:
        for n in args.seeds:
            val = test = either = 0
            for _ in range(args.draws):
                model = rng.normal(size=(k, n)) + 2.0 * rng.normal(size=n)
                a = bool(separated(model + rng.normal(size=(k, n)))[-1])
                b = bool(separated(model + rng.normal(size=(k, n)))[-1])
                val, test, either = val + a, test + b, either + (a or b)
            print(f"| {k} | {n} | " + " | ".join(f"{100 * x / args.draws:.1f} %" for x in (val, test, either)) + " |",
                  flush=True)


def _clears(counts: np.ndarray, n: int, level: float) -> bool:
    """Whether the best count's interval lies wholly above the worst's (then above some other's)."""
    best, worst = wilson(counts.max() / n, n, level), wilson(counts.min() / n, n, level)
    assert best is not None and worst is not None
    return worst[1] < best[0]


if __name__ == "__main__":
    main()
