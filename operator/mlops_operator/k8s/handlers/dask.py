"""The DaskJobs of distributed TrainingJobs: imported only when the operator runs them (``dask.enabled``).

A DaskJob's ``jobStatus`` changes after its runner pod's phase (the Dask
operator writes it on the pod's event), so the pod event alone could find the
DaskJob one step behind: this watch brings the TrainingJob back once more.
"""

from __future__ import annotations

from typing import Any

import kopf

from ...controllers import labels
from .watches import enqueue


@kopf.on.event("kubernetes.dask.org", "v1", "daskjobs", labels={labels.TRAINING_JOB: kopf.PRESENT})
async def daskjob_event(body: kopf.Body, deployments_by_model: kopf.Index, policies_by_deployment: kopf.Index, **_: Any) -> None:
    enqueue("DaskJob", body, deployments_by_model, policies_by_deployment)
