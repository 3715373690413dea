"""The analysis of one rollout step: promote, hold or roll back, from live counters.

Pure: the evidence (what champion and challenger did since the rollout
started), the criteria of ``spec.rollout.analysis`` and the step's progress
go in; a :class:`Verdict` comes out. The order of the table:

1. guardrails, judged at any time once the challenger answered
   :data:`MIN_REQUESTS` requests: its 5xx ratio above ``maxServerErrorRatio``
   or its p99 latency above ``maxP99Ratio`` times the champion's (and 50 ms more than it, both sides with
   200 requests or more) rolls back;
2. a step is judged only after ``stepDuration`` **and** ``minSamples``
   labelled predictions of the challenger within the step;
3. a *look* is taken each time the challenger's labelled predictions pass
   another multiple of ``minSamples``: two one-sided tests on the error rates,
   each at the share of ``alpha`` this look may spend. The spending follows
   the information fraction t = labelled / ``maxSamples``: α(t) = alpha·t³
   (Lan–DeMets, close to O'Brien–Fleming), and a look spends
   α(t) − α(t of the previous look). The shares add up to at most ``alpha``,
   so however often the evidence is looked at, each test's error rate over the
   whole rollout stays within ``alpha`` (union bound); early looks demand
   overwhelming evidence, the last ones little more than a single test would:

   - *worse*: H0 "the challenger's error rate is not higher" rejected → roll back;
   - *not worse*: H0 "it is higher by ``margin`` or more" rejected → advance
     (the next step, or promotion after the last one; in manual approval mode,
     wait until ``approvedVersion`` names the challenger). That conclusion
     stands: later steps advance on their time, samples and guardrails, and a
     look with alpha left can still roll a challenger back as worse;
4. past ``maxSamples`` labelled predictions without a decision → roll back
   (Inconclusive); otherwise hold.

The tests compare two proportions with the Agresti–Caffo adjusted Wald
statistic (one success and one failure added to each side), which keeps its
level at small samples and error rates near 0, and needs only ``math``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_REQUESTS = 20
"""Requests of the challenger before its 5xx ratio counts: a single early 5xx is not a 100 % failure rate."""
MIN_LATENCY_REQUESTS = 200
"""Requests of each side before their p99 latencies are compared: the p99 of 20 requests is their slowest one."""
LATENCY_SLACK_SECONDS = 0.05
"""A challenger p99 within this much of the champion's never rolls back: at millisecond latencies the histogram's
adjacent buckets (10 ms, 25 ms) already differ by more than 2x, and a shadow's copies arrive in bursts."""

# Decisions.
HOLD, ADVANCE, PROMOTE, AWAIT_APPROVAL, ROLL_BACK = "Hold", "Advance", "Promote", "AwaitApproval", "RollBack"


@dataclass(frozen=True)
class Arm:
    """What one side served since the rollout started."""

    labelled: int = 0
    errors: int = 0
    requests: int = 0
    server_errors: int = 0
    p99_seconds: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.labelled if self.labelled else None


@dataclass(frozen=True)
class Criteria:
    """``spec.rollout.analysis`` and ``stepDuration`` as plain numbers."""

    alpha: float = 0.05
    margin: float = 0.02
    min_samples: int = 200
    max_samples: int = 5000
    max_server_error_ratio: float = 0.01
    max_p99_ratio: float = 2.0
    step_seconds: float = 60.0

    @property
    def looks(self) -> int:
        """Planned looks: one per ``min_samples`` labelled predictions up to ``max_samples``."""
        return max(1, self.max_samples // self.min_samples)

    def spent(self, labelled: int) -> float:
        """alpha spent once ``labelled`` challenger labels were looked at: alpha·t³, t = labelled / max_samples."""
        t = min(1.0, max(0, labelled) / self.max_samples)
        return self.alpha * t ** 3

    def alpha_at(self, labelled: int, looks_taken: int) -> float:
        """The level of this look's tests: what the spending allows beyond the previous looks'."""
        return max(0.0, self.spent(labelled) - self.spent(looks_taken * self.min_samples))


@dataclass(frozen=True)
class Progress:
    """Where the rollout is: the step's age and samples, the looks taken, whether this is the last step."""

    step_elapsed: float
    step_labelled: int
    looks_taken: int
    last_step: bool
    manual: bool = False
    approved: bool = False
    proven: bool = False
    """"Not worse" was concluded at an earlier step: it stands (the error rate does not depend on the weight);
    later steps ramp the exposure under the guardrails, and a look with alpha left can still find it worse."""


@dataclass(frozen=True)
class Verdict:
    decision: str
    reason: str
    message: str
    looked: bool = False
    p_worse: float | None = None
    p_not_worse: float | None = None


def _upper_tail(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def error_rate_tests(champion: Arm, challenger: Arm, margin: float) -> tuple[float, float]:
    """``(p_worse, p_not_worse)``: one-sided p-values of "challenger higher" and of "not higher by margin or more"."""
    nb, nc = champion.labelled + 2, challenger.labelled + 2
    pb, pc = (champion.errors + 1) / nb, (challenger.errors + 1) / nc
    se = math.sqrt(pb * (1 - pb) / nb + pc * (1 - pc) / nc)
    diff = pc - pb
    return _upper_tail(diff / se), _upper_tail((margin - diff) / se)


def look_due(challenger_labelled: int, looks_taken: int, min_samples: int) -> bool:
    """Whether the challenger's labelled predictions passed the next multiple of ``min_samples``."""
    return challenger_labelled >= (looks_taken + 1) * min_samples


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def judge(champion: Arm, challenger: Arm, criteria: Criteria, progress: Progress, *, classification: bool = True) -> Verdict:
    """The decision table of the module docstring."""
    c = criteria
    if challenger.requests >= MIN_REQUESTS:
        ratio = challenger.server_errors / challenger.requests
        if ratio > c.max_server_error_ratio:
            return Verdict(ROLL_BACK, "ServerErrors",
                           f"challenger answered {challenger.server_errors}/{challenger.requests} requests with 5xx "
                           f"({_pct(ratio)} > {_pct(c.max_server_error_ratio)})")
        if (min(champion.requests, challenger.requests) >= MIN_LATENCY_REQUESTS and challenger.p99_seconds is not None
                and champion.p99_seconds
                and challenger.p99_seconds > max(c.max_p99_ratio * champion.p99_seconds,
                                                 champion.p99_seconds + LATENCY_SLACK_SECONDS)):
            return Verdict(ROLL_BACK, "Latency",
                           f"challenger p99 {challenger.p99_seconds * 1000:g} ms > {c.max_p99_ratio:g} x champion's "
                           f"{champion.p99_seconds * 1000:g} ms")
    if progress.step_elapsed < c.step_seconds:
        return Verdict(HOLD, "StepTime", f"step held {progress.step_elapsed:.0f}s of {c.step_seconds:g}s")
    if progress.step_labelled < c.min_samples:
        return Verdict(HOLD, "Samples", f"{progress.step_labelled}/{c.min_samples} labelled predictions of the challenger in this step")
    if not classification:
        # No error rate from feedback for regression (only sums of squares): guardrails alone decide.
        return _advance(progress, "Guardrails", "no 5xx or latency breach (regression: no error-rate test)")
    due = look_due(challenger.labelled, progress.looks_taken, c.min_samples)
    rates = (f"error rate challenger {_pct(challenger.error_rate)} (n={challenger.labelled}) vs champion "
             f"{_pct(champion.error_rate)} (n={champion.labelled})")
    if progress.proven:
        p_worse = p_not_worse = None
        if due:
            p_worse, p_not_worse = error_rate_tests(champion, challenger, c.margin)
            a = c.alpha_at(challenger.labelled, progress.looks_taken)
            if p_worse < a:
                return Verdict(ROLL_BACK, "Worse", f"{rates}: worse, p={p_worse:.2g} < {a:.2g}", True, p_worse, p_not_worse)
        v = _advance(progress, "NotWorse", f"{rates}: shown not worse at an earlier step; this step held")
        return Verdict(v.decision, v.reason, v.message, due, p_worse, p_not_worse)
    if not due:
        need = (progress.looks_taken + 1) * c.min_samples
        return Verdict(HOLD, "Undecided", f"next look at {need} labelled predictions of the challenger ({challenger.labelled} now)")
    p_worse, p_not_worse = error_rate_tests(champion, challenger, c.margin)
    a = c.alpha_at(challenger.labelled, progress.looks_taken)
    if p_worse < a:
        return Verdict(ROLL_BACK, "Worse", f"{rates}: worse, p={p_worse:.2g} < {a:.2g}", True, p_worse, p_not_worse)
    if p_not_worse < a:
        v = _advance(progress, "NotWorse", f"{rates}: not worse by {_pct(c.margin)}, p={p_not_worse:.2g} < {a:.2g}")
        return Verdict(v.decision, v.reason, v.message, True, p_worse, p_not_worse)
    if challenger.labelled >= c.max_samples:
        return Verdict(ROLL_BACK, "Inconclusive", f"{rates}: no decision within {c.max_samples} labelled predictions",
                       True, p_worse, p_not_worse)
    return Verdict(HOLD, "Undecided", f"{rates}: undecided (p worse {p_worse:.2g}, p not worse {p_not_worse:.2g}, "
                   f"need < {a:.2g})", True, p_worse, p_not_worse)


def _advance(progress: Progress, reason: str, message: str) -> Verdict:
    if not progress.last_step:
        return Verdict(ADVANCE, reason, message)
    if progress.manual and not progress.approved:
        return Verdict(AWAIT_APPROVAL, "AwaitingApproval", message + "; set spec.rollout.approvedVersion to the challenger to promote")
    return Verdict(PROMOTE, reason, message)


def p99(buckets: list[float], counts: list[int]) -> float | None:
    """The 99th percentile as the upper bound of its bucket (``counts`` per bucket, the last one +Inf).

    None when there are no requests; the last finite bound when it lies in +Inf.
    """
    total = sum(counts)
    if total <= 0:
        return None
    need = math.ceil(0.99 * total)
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= need:
            return buckets[i] if i < len(buckets) else buckets[-1]
    return buckets[-1]
