"""DriftPolicy: windows of sensor counts, the checks, the trigger, and the retrain it starts.

Every decision's state lives in the policy's ``status`` (the window's counts,
the breach streak, the trigger times, the retrain history), so an operator
restart neither loses nor repeats a trigger: the same status, observations
and pod baselines give the same answer.

Three pure steps, run by ``reconcile.driftpolicy`` when a check is due:

1. :func:`~.window.advance_window` folds what each serving pod's drift sensor
   counted since the last check into the window (``status.window``);
2. :func:`~.checks.run_checks` compares the window with the serving version's
   reference profile and training baseline;
3. :func:`~.decision.decide` turns the check result, the retrain TrainingJobs
   the policy owns and the clock into the new status, at most one retrain to
   create, and the events to post.

One module per concern: ``window`` (counter algebra, folding), ``checks``,
``schedule`` (when a check is due), ``scheduled`` (when ``spec.schedule``
retrains), ``trigger`` (what holds a trigger back), ``retrain`` (the retrain
TrainingJob and following it), ``status`` (the conditions) and ``decision``,
which composes them. This package re-exports
what the reconcile loop, the drivers and the tests use.
"""

from ..decision import Event
from .checks import MAX_SCORES, CheckOutcome, CheckResult, Verdict, run_checks, unavailable, unreadable_text
from .decision import PolicyDecision, decide, spec_errors
from .retrain import MAX_RETRAINS, approval_hint, build_retrain, owned_by, retrain_index, retrain_name, retrain_result
from .schedule import initial_delay, is_due, next_check
from .window import Snapshot, WindowUpdate, add_counters, advance_window, counters_of, empty_counters

__all__ = [
    "MAX_RETRAINS", "MAX_SCORES", "CheckOutcome", "CheckResult", "Event", "PolicyDecision", "Snapshot", "Verdict",
    "WindowUpdate", "add_counters", "advance_window", "approval_hint", "build_retrain", "counters_of", "decide",
    "empty_counters", "initial_delay", "is_due", "next_check", "owned_by", "retrain_index", "retrain_name",
    "retrain_result", "run_checks", "spec_errors", "unavailable", "unreadable_text",
]
