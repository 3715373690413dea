"""kopf handlers. Importing this package registers them all.

Handlers are thin: every watch event adds the keys of the objects it concerns
to the work queue (:mod:`..queue`), which runs the level-based reconciles of
``controllers.reconcile`` — the very ones the local runner calls. The
reconciles read what kopf's indices keep (:mod:`.indices`, ``k8s/cache.py``).
"""

from . import indices, lifecycle, watches  # noqa: F401  (registration by import)

from ..context import current

# Watching daskjobs needs their CRD and RBAC: only when the operator is told to run DaskJobs.
if current().settings.dask_jobs:
    from . import dask  # noqa: F401
