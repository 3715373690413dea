"""Shadow and canary rollouts of a ModelDeployment: the analysis, the evidence and the state machine.

``analysis`` is the decision table (promote / hold / roll back) over two
sides' counters; ``evidence`` folds pod scrapes into those counters;
``plan`` is the state machine the ModelDeployment controller asks what the
champion and the challenger should run. All pure; see docs/rollouts.md.
"""

from .analysis import Arm, Criteria, Progress, Verdict, judge
from .evidence import PodReading
from .state import ACTIVE, Plan, Route, plan, requeue_seconds

__all__ = ["ACTIVE", "Arm", "Criteria", "Plan", "PodReading", "Progress", "Route", "Verdict", "judge", "plan", "requeue_seconds"]
