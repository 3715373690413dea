"""How often the canary analysis promotes or rolls back, and on how many labels, on simulated feedback streams.

    python bench/rollout/analysis.py [--trials 1000] [--base 0.10] [--seed 0]

Each trial is one canary rollout with the defaults of ``spec.rollout``
(steps 10 % → 50 % → 100 %, and ``analysis``'s defaults unless
``--margin`` / ``--max-samples`` say otherwise; step time taken as already held): labelled predictions
arrive in batches of 50, each answered by the challenger with the step's
weight, each wrong with the side's error rate; after every batch the
operator's own decision table (``controllers/rollout/analysis.judge``) is
asked, and its Advance / Promote / RollBack applied as the state machine does.
The challenger's error rate is the champion's (``--base``) plus
delta ∈ {−5, −2, −1, 0, +1, +2, +5} points.

Beside it, in the same run on the same streams, a *naive* rule of the kind
a threshold check applies: at each step after minSamples labels, promote
(or advance) when the challenger's observed error rate is not above the
champion's, else roll back.

Definitions: a *false promotion* promotes a challenger worse by more than
the margin (+5 here; +1 and +2 are within or at the margin, where promotion
is allowed); a *false rollback* rolls back a challenger that is not worse
(delta ≤ 0).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "operator"))

from mlops_operator.api.modeldeployment import Analysis  # noqa: E402
from mlops_operator.controllers.rollout.analysis import (  # noqa: E402
    ADVANCE, PROMOTE, ROLL_BACK, Arm, Criteria, Progress, judge,
)

STEPS = (0.10, 0.50, 1.00)
BATCH = 50
DELTAS = (-0.05, -0.02, -0.01, 0.0, 0.01, 0.02, 0.05)
MAX_BATCHES = 2000


def one_rollout(rng: np.random.Generator, base: float, delta: float, c: Criteria, naive: bool) -> tuple[str, int, int]:
    """``(outcome, challenger labels, all labels)`` of one simulated canary."""
    nb = eb = nc = ec = 0
    step, step_start, looks, proven = 0, 0, 0, False
    for _ in range(MAX_BATCHES):
        w = STEPS[step]
        to_challenger = int(rng.binomial(BATCH, w))
        nc += to_challenger
        ec += int(rng.binomial(to_challenger, base + delta))
        nb += BATCH - to_challenger
        eb += int(rng.binomial(BATCH - to_challenger, base))
        last = step == len(STEPS) - 1
        if naive:
            if nc - step_start < c.min_samples:
                continue
            if ec / nc <= (eb / nb if nb else 1.0):
                decision = PROMOTE if last else ADVANCE
            else:
                decision = ROLL_BACK
        else:
            v = judge(Arm(nb, eb, nb, 0, None), Arm(nc, ec, nc, 0, None), c,
                      Progress(step_elapsed=1e9, step_labelled=nc - step_start, looks_taken=looks, last_step=last,
                               proven=proven))
            if v.looked:
                looks = nc // c.min_samples
            proven = proven or v.reason == "NotWorse"
            decision = v.decision
        if decision == ADVANCE:
            step, step_start = step + 1, nc
        elif decision in (PROMOTE, ROLL_BACK):
            return ("promote" if decision == PROMOTE else "rollback"), nc, nb + nc
    return "undecided", nc, nb + nc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--base", type=float, default=0.10, help="the champion's error rate (default 0.10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--margin", type=float, default=None, help="analysis.margin (default: the API's default)")
    p.add_argument("--max-samples", type=int, default=None, help="analysis.maxSamples (default: the API's default)")
    a = p.parse_args()
    d = Analysis()
    c = Criteria(alpha=d.alpha, margin=d.margin if a.margin is None else a.margin, min_samples=d.min_samples,
                 max_samples=d.max_samples if a.max_samples is None else a.max_samples, step_seconds=0)
    t0 = time.perf_counter()
    flags = "".join(f" --{k} {v:g}" for k, v in (("margin", a.margin), ("max-samples", a.max_samples)) if v is not None)
    print(f"`python bench/rollout/analysis.py --trials {a.trials} --base {a.base:g} --seed {a.seed}{flags}`: champion error rate "
          f"{a.base:.0%}, steps 10/50/100 %, alpha {c.alpha:g} over {c.looks} looks, margin {c.margin:.0%}, "
          f"minSamples {c.min_samples}, maxSamples {c.max_samples}, {a.trials} rollouts per row\n")
    print("| challenger − champion | rule | promoted | rolled back | challenger labels to decide, median [p90] | all labels, median |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for delta in DELTAS:
        for naive in (False, True):
            rng = np.random.default_rng([a.seed, int(round(delta * 1000)) + 100])
            runs = [one_rollout(rng, a.base, delta, c, naive) for _ in range(a.trials)]
            promoted = sum(r[0] == "promote" for r in runs) / a.trials
            rolled = sum(r[0] == "rollback" for r in runs) / a.trials
            chall = sorted(r[1] for r in runs)
            total = [r[2] for r in runs]
            print(f"| {delta * 100:+.0f} pt | {'naive' if naive else 'operator'} | {promoted:.1%} | {rolled:.1%} | "
                  f"{statistics.median(chall):.0f} [{chall[int(0.9 * (len(chall) - 1))]}] | {statistics.median(total):.0f} |")
    print(f"\n{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
