"""The cluster side: a Cluster over the Kubernetes API, kopf handlers, the `run` command."""
