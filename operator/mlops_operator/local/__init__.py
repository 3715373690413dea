"""The embedded default: the operator's own controllers on one machine, no cluster.

``MemoryCluster`` implements the same Cluster protocol as the Kubernetes
client; ``executor`` plays kubelet and kube-controller-manager (a Job becomes a
``mlops-operator train`` process, a Deployment N ``serve`` processes, a
Service a local address); ``manager`` runs the reconcile loops.
"""
