"""The survey behind ``store/trusted_types.py``: which types the models this trainer builds hold.

A stored model is loaded only when every type in it is trusted (see
``store/filesystem.py``), and for scikit-learn, numpy, scipy and the standard
library trust is an explicit list of types, never a package prefix.  The list
is derived, not written by hand: every scikit-learn classifier and regressor
the trainer accepts is trained through the trainer's own steps on a data set
shipped with scikit-learn (plus the parameter and preprocessing variants
that change what a fitted model holds), serialised with skops, and the types
skops does not trust on its own are collected.

    python -m mlops_operator.runtime.type_survey --write   # regenerate the list
    python -m mlops_operator.runtime.type_survey --check   # exit 1 when it is stale

``tests/unit/test_trusted_types.py`` trains every recipe through ``train``,
loads each back with the committed list, and fails when the list differs
from what the recipes hold (e.g. after a scikit-learn upgrade).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from ..api.trainingjob import Task
from .data import DEFAULT_MAX_DOWNLOAD_BYTES, DEFAULT_PVC_ROOT

DATASETS: Mapping[str, tuple[str, str]] = {
    "classification": ("sklearn://iris", "species"),
    "regression": ("sklearn://diabetes", "progression"),
}
"""The data set each task is surveyed on (packaged with scikit-learn: no download).
Binary and multi-class models of the estimators below hold the same types."""

NOT_TRAINABLE: Mapping[str, str] = {
    **{
        path: "needs estimator objects, which a TrainingJob's JSON params cannot give"
        for path in (
            "sklearn.ensemble.StackingClassifier",
            "sklearn.ensemble.StackingRegressor",
            "sklearn.ensemble.VotingClassifier",
            "sklearn.ensemble.VotingRegressor",
            "sklearn.model_selection.FixedThresholdClassifier",
            "sklearn.model_selection.TunedThresholdClassifierCV",
            "sklearn.multiclass.OneVsOneClassifier",
            "sklearn.multiclass.OneVsRestClassifier",
            "sklearn.multiclass.OutputCodeClassifier",
            "sklearn.multioutput.ClassifierChain",
            "sklearn.multioutput.MultiOutputClassifier",
            "sklearn.multioutput.MultiOutputRegressor",
            "sklearn.multioutput.RegressorChain",
            "sklearn.semi_supervised.SelfTrainingClassifier",
        )
    },
    **{
        path: "needs a 2-D target; the trainer trains one target column"
        for path in (
            "sklearn.linear_model.MultiTaskElasticNet",
            "sklearn.linear_model.MultiTaskElasticNetCV",
            "sklearn.linear_model.MultiTaskLasso",
            "sklearn.linear_model.MultiTaskLassoCV",
        )
    },
}
"""Classifiers and regressors the trainer refuses (as an invalid spec or invalid data) whatever the spec says."""

_QUICK: Mapping[str, Any] = {"n_estimators": 5}
"""Applied wherever the estimator has the parameter: fewer trees hold the same types."""

_SPEC: Mapping[str, Mapping[str, Any]] = {
    # Faster, same types.
    "sklearn.ensemble.HistGradientBoostingClassifier": {"params": {"max_iter": 5}},
    "sklearn.ensemble.HistGradientBoostingRegressor": {"params": {"max_iter": 5}},
    "sklearn.linear_model.LogisticRegressionCV": {"params": {"Cs": 2, "cv": 2}},
    "sklearn.neural_network.MLPClassifier": {"params": {"max_iter": 20}},
    "sklearn.neural_network.MLPRegressor": {"params": {"max_iter": 20}},
    # Needs what the defaults do not give.
    "sklearn.naive_bayes.CategoricalNB": {"preprocessing": {"numeric": {"scale": "minmax"}}},
    "sklearn.naive_bayes.ComplementNB": {"preprocessing": {"numeric": {"scale": "minmax"}}},
    "sklearn.naive_bayes.MultinomialNB": {"preprocessing": {"numeric": {"scale": "minmax"}}},
    "sklearn.cross_decomposition.CCA": {"params": {"n_components": 1}},
    "sklearn.cross_decomposition.PLSCanonical": {"params": {"n_components": 1}},
    "sklearn.isotonic.IsotonicRegression": {"data": {"features": ["bmi"]}},
}
"""Per estimator: parameters, preprocessing or data that make its default recipe train (quickly)."""


@dataclass(frozen=True)
class Recipe:
    """One training run of the survey: an estimator, its parameters, and the spec around it."""

    class_path: str
    task: Task
    params: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    """More ``spec.data`` fields (features, categorical)."""
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    why: str = ""
    """What a variant adds over the default recipe (empty for the default)."""

    @property
    def id(self) -> str:
        name = self.class_path.rsplit(".", 1)[1]
        return f"{name}[{self.why}]" if self.why else name

    def manifest(self, name: str = "survey") -> dict[str, Any]:
        """The TrainingJob this recipe trains."""
        source, target = DATASETS[self.task]
        spec: dict[str, Any] = {
            "model": "survey",
            "task": self.task,
            "data": {"source": source, "target": target, "validation": {"fraction": 0.25, "seed": 0}, **self.data},
            "estimator": {"class": self.class_path, "params": dict(self.params)},
        }
        if self.preprocessing:
            spec["preprocessing"] = dict(self.preprocessing)
        return {"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob",
                "metadata": {"name": name, "namespace": "survey", "generation": 1}, "spec": spec}


def public_path(cls: type) -> str:
    """The shortest import path under which ``cls`` is exported (``sklearn.svm.SVC``)."""
    parts = cls.__module__.split(".")
    for i in range(1, len(parts) + 1):
        module = ".".join(parts[:i])
        if getattr(importlib.import_module(module), cls.__name__, None) is cls:
            return f"{module}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__name__}"


def allowed_estimators() -> dict[str, Task]:
    """Every scikit-learn classifier and regressor, by public path, with its task.

    These are the sklearn estimators the trainer infers a task for; the others
    with a ``predict`` (clusterers, outlier detectors) are outside its tasks,
    and are refused when stored if they hold a type outside the list.
    """
    from sklearn.utils import all_estimators

    out: dict[str, Task] = {}
    for kind, task in (("classifier", "classification"), ("regressor", "regression")):
        for _, cls in all_estimators(type_filter=kind):
            out[public_path(cls)] = task  # type: ignore[assignment]
    return dict(sorted(out.items()))


def default_recipe(class_path: str, task: Task) -> Recipe:
    """The estimator with its defaults (fewer trees), trained as the trainer would."""
    cls = _import(class_path)
    defaults = cls().get_params(deep=False)
    extra = _SPEC.get(class_path, {})
    params = {**{k: v for k, v in _QUICK.items() if k in defaults}, **extra.get("params", {})}
    return Recipe(class_path, task, params, extra.get("data", {}), extra.get("preprocessing", {}))


def variants() -> Iterator[Recipe]:
    """Parameters and preprocessing that change the types a fitted model holds."""
    from sklearn.metrics._dist_metrics import METRIC_MAPPING64
    from sklearn.neighbors import BallTree

    knn = "sklearn.neighbors.KNeighborsClassifier"
    yield Recipe(knn, "classification", {"algorithm": "ball_tree"}, why="a BallTree instead of a KDTree")
    # Each distance class a neighbour tree can store.  Not: pyfunc (a callable cannot
    # come from JSON) and mahalanobis (its VI must be an array; JSON gives a list).
    by_class: dict[str, str] = {}
    for metric in sorted(set(BallTree.valid_metrics) - {"pyfunc", "mahalanobis"}):
        by_class.setdefault(METRIC_MAPPING64[metric].__name__, metric)
    iris = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
    needs: dict[str, dict[str, Any]] = {
        "minkowski": {"params": {"p": 3}},  # p 1 and 2 become manhattan and euclidean
        "seuclidean": {"params": {"metric_params": {"V": [1.0] * len(iris)}}},
        "haversine": {"data": {"features": iris[:2]}},  # latitude and longitude
    }
    for metric in sorted(by_class.values()):
        need = needs.get(metric, {})
        yield Recipe(knn, "classification", {"algorithm": "ball_tree", "metric": metric, **need.get("params", {})},
                     need.get("data", {}), why=f"{metric} distance")
    yield Recipe("sklearn.neural_network.MLPClassifier", "classification", {"solver": "sgd", "max_iter": 20}, why="the SGD optimiser")
    for method in ("isotonic", "temperature"):
        yield Recipe("sklearn.calibration.CalibratedClassifierCV", "classification", {"method": method}, why=f"{method} calibration")
    for power, link in ((1.5, "log"), (1.5, "identity")):
        yield Recipe("sklearn.linear_model.TweedieRegressor", "regression", {"power": power, "link": link},
                     why=f"Tweedie power {power}, {link} link")
    # The preprocessing choices, on both column kinds.
    tree = "sklearn.tree.DecisionTreeClassifier"
    cat = {"categorical": ["petal width (cm)"]}
    for numeric, categorical in (
        ({"impute": "mean", "scale": "minmax"}, {"impute": "constant", "encode": "ordinal"}),
        ({"impute": "most_frequent", "scale": "robust"}, {"impute": "none", "encode": "onehot"}),
        ({"impute": "none", "scale": "none"}, {"impute": "most_frequent", "encode": "onehot"}),
    ):
        why = f"numeric {numeric['impute']}/{numeric['scale']}, categorical {categorical['impute']}/{categorical['encode']}"
        yield Recipe(tree, "classification", data=cat, preprocessing={"numeric": numeric, "categorical": categorical}, why=why)


def recipes() -> list[Recipe]:
    """The whole survey: each trainable estimator's default recipe, then the variants."""
    out = [default_recipe(path, task) for path, task in allowed_estimators().items() if path not in NOT_TRAINABLE]
    return out + list(variants())


def types_of(recipe: Recipe) -> list[str]:
    """Train ``recipe`` through the trainer's steps and list the types skops does not trust itself.

    Nothing is loaded back and nothing is stored: this is how the list is
    made, so it must not depend on the list.
    """
    import skops.io as sio

    from . import trainer

    log = _silent
    job = trainer.validate_manifest(recipe.manifest())
    choice = trainer.choose_estimator(job.spec, ())
    target = trainer.Target("survey", job.spec.model, "v1")
    ds, _ = trainer.load_data(job.spec.data, target, choice.task, None, DEFAULT_PVC_ROOT, DEFAULT_MAX_DOWNLOAD_BYTES, log)
    split = trainer.split_data(ds, choice.task, job.spec.data.validation, log)
    fitted = trainer.fit(choice, ds, split, job.spec.preprocessing, log)
    return list(sio.get_untrusted_types(data=sio.dumps(fitted.pipeline)))


def survey(selected: Sequence[Recipe] | None = None) -> set[str]:
    """The union of :func:`types_of` over the recipes."""
    found: set[str] = set()
    for recipe in recipes() if selected is None else selected:
        found.update(types_of(recipe))
    return found


def libraries() -> dict[str, str]:
    """The versions the list is valid for: what a fitted model holds changes with them."""
    return {dist: importlib_metadata.version(dist) for dist in ("scikit-learn", "numpy", "scipy", "skops")}


def render(types: set[str], versions: Mapping[str, str]) -> str:
    """The text of ``store/trusted_types.py``."""
    lines = [
        '"""The types a stored model may hold: generated by ``python -m mlops_operator.runtime.type_survey --write``.',
        "",
        "Do not edit by hand; see runtime/type_survey.py for how the list is made",
        "and docs/training.md for the rule.",
        '"""',
        "",
        "SURVEYED_WITH = {",
        *(f'    "{k}": "{v}",' for k, v in versions.items()),
        "}",
        '"""The library versions the survey ran with."""',
        "",
        "TRUSTED_TYPES = frozenset({",
        *(f'    "{t}",' for t in sorted(types)),
        "})",
        '"""Types (never functions) skops may instantiate on top of the ones it trusts itself."""',
        "",
    ]
    return "\n".join(lines)


def target_file() -> Path:
    from .. import store

    return Path(store.__file__).with_name("trusted_types.py")


def _import(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    cls: type = getattr(importlib.import_module(module), name)
    return cls


def _silent(event: str, level: str = "info", **fields: Any) -> None:
    pass


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mlops_operator.runtime.type_survey", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate store/trusted_types.py")
    mode.add_argument("--check", action="store_true", help="exit 1 when store/trusted_types.py differs from the survey")
    args = p.parse_args(argv)
    text = render(survey(), libraries())
    path = target_file()
    if args.write:
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
        return 0
    if path.read_text(encoding="utf-8") != text:
        print(f"{path} is stale: run python -m mlops_operator.runtime.type_survey --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
