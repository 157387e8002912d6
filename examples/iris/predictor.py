"""Iris flower classifier (scikit-learn), trained on first start on the data that comes with scikit-learn."""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

# The columns the model is trained on, in load_iris()'s order; also the fields of a request.
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")

log = logging.getLogger(__name__)


class IrisPredictor:
    def __init__(self, config: dict[str, Any]) -> None:
        model_file = Path(__file__).parent / str(config.get("model_file", "model.joblib"))
        if model_file.exists():
            self.model: LogisticRegression = joblib.load(model_file)
        else:
            self.model = train()
            save(self.model, model_file)

    def predict(self, payload: Any) -> dict[str, Any] | list[dict[str, Any]]:
        """One flower (a JSON object) -> one result; a list of flowers -> a list of results."""
        results = self.classify(to_rows(payload, "payload"))
        return results if isinstance(payload, list) else results[0]

    def predict_batch(self, payloads: list[Any]) -> list[Any]:
        """Server-side batching: classify the flowers of all the requests in one call to the model."""
        rows = [row for n, payload in enumerate(payloads) for row in to_rows(payload, f"batch[{n}]")]
        results = iter(self.classify(rows))
        return [[next(results) for _ in p] if isinstance(p, list) else next(results) for p in payloads]

    def classify(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        if not rows:
            return []
        labels = [str(label) for label in self.model.classes_]
        return [
            {
                "label": labels[int(p.argmax())],
                "probabilities": {label: round(float(x), 4) for label, x in zip(labels, p, strict=True)},
            }
            for p in self.model.predict_proba(rows)
        ]


def to_rows(payload: Any, where: str) -> list[list[float]]:
    if isinstance(payload, list):
        return [to_row(item, f"{where}[{i}]") for i, item in enumerate(payload)]
    return [to_row(payload, where)]


def to_row(item: Any, where: str) -> list[float]:
    """A JSON object with the four measurements (cm) -> a row in FEATURES order; ValueError if malformed."""
    if not isinstance(item, dict):
        expected = ", ".join(FEATURES)
        raise ValueError(f"{where}: expected a JSON object with {expected}, got {type(item).__name__}")
    missing = [name for name in FEATURES if name not in item]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)} (expected {', '.join(FEATURES)})")
    row = []
    for name in FEATURES:
        value = item[name]
        # bool is an int in Python, but true/false is no measurement.
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{where}: {name} must be a number, got {value!r}")
        row.append(float(value))
    return row


def train() -> LogisticRegression:
    iris = load_iris()
    # Fit on the species names, so that the model's classes_ are the labels to return.
    model = LogisticRegression(max_iter=1000)
    model.fit(iris.data, iris.target_names[iris.target])
    return model


def save(model: LogisticRegression, model_file: Path) -> None:
    """Write a temporary file, then rename it: a replica starting meanwhile never reads half a model."""
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=model_file.parent, prefix=f".{model_file.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp makes it private to its owner; a model is no secret
        joblib.dump(model, tmp)
        os.replace(tmp, model_file)
    except OSError as exc:
        # A read-only project folder is no reason to fail: serve the model just trained.
        log.warning("cannot save the model to %s (%s); the next start trains it again", model_file, exc)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
