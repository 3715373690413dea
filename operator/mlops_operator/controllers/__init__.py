"""Pure decisions and builders, plus the reconcile loops that run them.

A decision is a function of (object, observed children, settings, clock) that
returns the children that should exist and the status the object should show.
Reconcile functions read the world through the :class:`~.cluster.Cluster`
protocol, ask the decision, and apply the difference; the cluster operator
(``k8s/``) and the embedded default (``local/``) hand them different
implementations of that protocol and nothing else.
"""
