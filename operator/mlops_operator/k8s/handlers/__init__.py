"""kopf handlers. Importing this package registers them all.

Handlers are thin: every watch event adds the keys of the objects it concerns
to the work queue (:mod:`..queue`), which runs the level-based reconciles of
``controllers.reconcile`` — the very ones the local runner calls.
"""

from . import lifecycle, watches  # noqa: F401  (registration by import)
