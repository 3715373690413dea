"""kopf handlers. Importing this package registers them all.

Handlers are thin: every watch event adds the keys of the objects it concerns
to the work queue (:mod:`..queue`), which runs the level-based reconciles of
``controllers.reconcile`` — the very ones the local runner calls. The
reconciles read what kopf's indices keep (:mod:`.indices`, ``k8s/cache.py``).
"""

from . import indices, lifecycle, watches  # noqa: F401  (registration by import)

from ..context import current


def _runs_daskjobs() -> bool:
    try:
        return current().settings.dask_jobs
    except RuntimeError:  # imported for one handler (a test), not by `mlops-operator run`
        return False


# Watching daskjobs needs their CRD and RBAC: only when the operator is told to run DaskJobs.
if _runs_daskjobs():
    from . import dask  # noqa: F401
