"""mlops-operator: train, serve, watch and retrain scikit-learn models on Kubernetes."""

__version__ = "0.1.0"

GROUP = "mlops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
