"""How often the release comparison fires on identical releases, and how often it finds real changes.

    python bench/releases.py [--trials 1000] [--seed 1]

Simulates comparisons the way `/api/v1/compare/releases` judges them (components/releases/stats.py):
each comparison has five operations whose baseline and candidate draw from the same log-normal
latency distribution and the same 2% error rate (identical releases), at 50 to 2,000 spans each;
then single operations with a slowdown or more errors, to show what the test can see.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from clew.components.releases.stats import Release, judge  # noqa: E402


def release(
    rng: random.Random, n: int, scale: float = 1.0, error_rate: float = 0.02, sigma: float = 0.6
) -> Release:
    sample = [rng.lognormvariate(17, sigma) * scale for _ in range(n)]
    return Release(n, sum(rng.random() < error_rate for _ in range(n)), sample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    sizes = (50, 200, 500, 1000, 2000)
    alarms = operations = 0
    for _ in range(args.trials):
        verdicts = judge([(release(rng, n), release(rng, n)) for n in sizes])
        alarms += any(v.regression for v in verdicts)
        operations += sum(v.regression for v in verdicts)
    print(
        f"identical releases, {args.trials} comparisons of {len(sizes)} operations ({', '.join(map(str, sizes))} spans):"
    )
    print(
        f"  comparisons with any regression: {alarms} ({alarms / args.trials:.2%}); operations flagged: {operations}"
    )
    print("power, one operation, 200 / 1000 spans a release:")
    for label, kwargs in (
        ("10% slower", {"scale": 1.10}),
        ("25% slower", {"scale": 1.25}),
        ("50% slower", {"scale": 1.5}),
        ("errors 2% -> 4%", {"error_rate": 0.04}),
        ("errors 2% -> 8%", {"error_rate": 0.08}),
    ):
        found = []
        for n in (200, 1000):
            hits = sum(
                judge([(release(rng, n), release(rng, n, **kwargs))])[0].regression
                for _ in range(args.trials // 5)
            )
            found.append(f"{hits / (args.trials // 5):.0%}")
        print(f"  {label}: found in {found[0]} / {found[1]}")


if __name__ == "__main__":
    main()
