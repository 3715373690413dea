"""An estimator defined outside scikit-learn, for the serving tests.

The server loads it only when told to trust this module
(``serve --allow-module tests.unit.serving_estimators``), as a pod gets the
operator's ``allowedModules``.  It raises on a row whose first feature is
``FAIL_ON``: a model exception on input the schema accepts, which the server
must report as its own fault (500), not the client's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

FAIL_ON = -999.0


class ThresholdClassifier(ClassifierMixin, BaseEstimator):
    """First class below the median of the first feature, last class above it."""

    def fit(self, X: Any, y: Any) -> ThresholdClassifier:
        X = np.asarray(X, dtype=np.float64)
        self.classes_ = np.unique(y)
        self.threshold_ = float(np.median(X[:, 0]))
        return self

    def predict(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if np.any(X[:, 0] == FAIL_ON):
            raise RuntimeError(f"ThresholdClassifier cannot predict a row whose first feature is {FAIL_ON}")
        return np.where(X[:, 0] > self.threshold_, self.classes_[-1], self.classes_[0])
