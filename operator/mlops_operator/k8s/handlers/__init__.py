"""kopf handlers, one module per kind. Importing this package registers them all.

Handlers are thin: every watch event (of the resource or of a child it owns)
asks for a level-based reconcile of the owning object; the reconcile itself
lives in ``controllers.reconcile`` and is shared with the local runner.
"""

from . import lifecycle, trainingjob  # noqa: F401  (registration by import)
from . import modeldeployment  # noqa: F401
from . import driftpolicy  # noqa: F401
