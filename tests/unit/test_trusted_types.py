"""The explicit list of types a stored model may hold (store/trusted_types.py).

Every scikit-learn classifier and regressor the trainer accepts is trained
through the real trainer on a packaged data set and loaded back through the
store with the list alone (no extra module prefixes); the list must be exactly
what those models hold, so a scikit-learn upgrade that changes them fails here
until the list is regenerated.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio

from mlops_operator.runtime import type_survey
from mlops_operator.runtime.data import DataError
from mlops_operator.runtime.pipeline import SpecError
from mlops_operator.runtime.trainer import TrainResult, train
from mlops_operator.store import MODEL_FILE, ModelStore
from mlops_operator.store.trusted_types import SURVEYED_WITH, TRUSTED_TYPES

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # deprecations inside scikit-learn

RECIPES = type_survey.recipes()
REGENERATE = "regenerate it with: python -m mlops_operator.runtime.type_survey --write (and review the diff)"


def quiet(*args: Any, **kwargs: Any) -> None:
    pass


@dataclass
class Outcome:
    result: TrainResult
    loaded: Any
    types: list[str]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome | Exception]:
    """Each recipe trained once through ``train`` and loaded back with the list alone."""
    store = ModelStore(tmp_path_factory.mktemp("store"))  # no extra module prefixes
    out: dict[str, Outcome | Exception] = {}
    for i, recipe in enumerate(RECIPES):
        try:
            result = train(recipe.manifest(), store, version=f"v{i}", log=quiet)
            loaded = store.load_model(result.namespace, result.model, result.version, expected_sha256=result.sha256)
            out[recipe.id] = Outcome(result, loaded, sio.get_untrusted_types(file=result.path / MODEL_FILE))
        except Exception as exc:  # reported by the recipe's own test below
            out[recipe.id] = exc
    return out


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.id for r in RECIPES])
def test_trains_and_loads_back_with_the_list(trained: dict[str, Outcome | Exception], recipe: type_survey.Recipe) -> None:
    outcome = trained[recipe.id]
    if isinstance(outcome, Exception):
        pytest.fail(f"{recipe.id} did not train and load back: {type(outcome).__name__}: {outcome}\n"
                    f"If a type is missing from store/trusted_types.py, {REGENERATE}")
    result = outcome.result
    assert result.created and result.metadata["estimator"] == recipe.class_path
    assert result.X_test is not None
    np.testing.assert_array_equal(outcome.loaded.predict(result.X_test), result.pipeline.predict(result.X_test))


def test_the_list_is_exactly_what_the_models_hold(trained: dict[str, Outcome | Exception]) -> None:
    failed = sorted(rid for rid, o in trained.items() if isinstance(o, Exception))
    assert not failed, f"recipes that did not train and load back: {failed}"
    held = set().union(*(o.types for o in trained.values() if isinstance(o, Outcome)))
    assert held == TRUSTED_TYPES, (
        f"store/trusted_types.py is stale: missing {sorted(held - TRUSTED_TYPES)}, "
        f"no longer held {sorted(TRUSTED_TYPES - held)}; {REGENERATE}"
    )


def test_the_survey_sees_what_the_trainer_stores(trained: dict[str, Outcome | Exception]) -> None:
    """The generator trains through the trainer's steps without storing: it must see the same types."""
    for recipe in [r for r in RECIPES if r.why][:3]:
        outcome = trained[recipe.id]
        assert isinstance(outcome, Outcome)
        assert type_survey.types_of(recipe) == outcome.types


def test_every_classifier_and_regressor_is_surveyed_or_refused() -> None:
    surveyed = {r.class_path for r in RECIPES if not r.why}
    allowed = set(type_survey.allowed_estimators())
    assert not surveyed & set(type_survey.NOT_TRAINABLE)
    assert surveyed | set(type_survey.NOT_TRAINABLE) == allowed, (
        f"new in scikit-learn: {sorted(allowed - surveyed - set(type_survey.NOT_TRAINABLE))}; "
        f"gone: {sorted((surveyed | set(type_survey.NOT_TRAINABLE)) - allowed)}"
    )


@pytest.mark.parametrize("class_path", sorted(type_survey.NOT_TRAINABLE))
def test_the_estimators_left_out_are_refused_as_invalid(tmp_path: Path, class_path: str) -> None:
    task = type_survey.allowed_estimators()[class_path]
    with pytest.raises((SpecError, DataError)):
        train(type_survey.Recipe(class_path, task).manifest(), tmp_path, log=quiet)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_the_list_holds_types_never_functions() -> None:
    for name in sorted(TRUSTED_TYPES):
        module, _, attr = name.rpartition(".")
        obj = getattr(importlib.import_module(module), attr)
        assert inspect.isclass(obj), f"{name} is not a class"


def test_the_image_pins_the_versions_the_list_was_surveyed_with() -> None:
    """What a fitted model holds changes with these libraries: the image must run the surveyed ones."""
    pins = dict(
        line.split("==", 1)
        for line in (Path(__file__).parents[2] / "hack" / "image" / "constraints.txt").read_text().split()
        if "==" in line
    )
    assert {dist: pins.get(dist) for dist in SURVEYED_WITH} == SURVEYED_WITH, REGENERATE
