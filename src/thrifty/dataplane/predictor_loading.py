"""Load the user's predictor class from the project folder and construct it.

The predictor file is imported by path (the project folder is on ``sys.path`` so it can import its
siblings); ``__init__(config)`` gets ``predictor.config``. Anything that goes wrong becomes a
``PredictorLoadError`` whose details say where, in the user's own code, it went wrong — that is what
``thrifty deploy`` shows the user.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thrifty.config.schema import ApiConfig
from thrifty.dataplane.replica_streaming import is_stream_function
from thrifty.errors import PredictorLoadError


@dataclass(frozen=True, slots=True)
class LoadedPredictor:
    instance: Any
    predict: Callable[[Any], Any] | None  # None: a batch-only predictor (serving.batching set, no predict)
    predict_is_async: bool
    predict_batch: Callable[[list[Any]], Any] | None
    predict_batch_is_async: bool
    # predict is a generator function, sync or async: each item is streamed (replica_streaming)
    predict_streams: bool = False


def _module_name(rel_path: str) -> str:
    return rel_path[: -len(".py")].replace("/", ".")


def _where_in_project(exc: BaseException, project_dir: Path) -> str:
    """'<file>:<line> in <function>' of the innermost frame inside the project folder."""
    root = project_dir.resolve()
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        try:
            rel = Path(frame.filename).resolve().relative_to(root)
        except (ValueError, OSError):
            continue
        where = f"{rel}:{frame.lineno} in {frame.name}"
    if isinstance(exc, SyntaxError) and exc.filename:
        try:
            rel = Path(exc.filename).resolve().relative_to(root)
            where = f"{rel}:{exc.lineno} in <module>"
        except (ValueError, OSError):
            pass
    return where


def load_failure_details(exc: BaseException, project_dir: Path) -> dict[str, str]:
    """The status-file document of a failed load: error, message, where, traceback."""
    if isinstance(exc, PredictorLoadError):
        return {
            "error": exc.code,
            "message": exc.message,
            "where": str(exc.details.get("where", "")),
            "traceback": str(exc.details.get("traceback", "")),
        }
    return {
        "error": PredictorLoadError.code,
        "message": f"{type(exc).__name__}: {exc}",
        "where": _where_in_project(exc, project_dir),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def _class_where(cls: type, rel_path: str) -> str:
    try:
        line = inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        line = 1
    return f"{rel_path}:{line} in {cls.__name__}"


def _contract_error(message: str, where: str) -> PredictorLoadError:
    return PredictorLoadError(f"PredictorContractError: {message}", details={"where": where, "traceback": ""})


def load_predictor(api: ApiConfig, project_dir: Path) -> LoadedPredictor:
    """Import and construct the predictor. Raises PredictorLoadError (any other exception: see
    ``load_failure_details``) — the caller reports it; this function never exits the process."""
    rel = api.predictor.path
    file = project_dir / rel
    if not file.is_file():
        raise PredictorLoadError(
            f"FileNotFoundError: {rel} not found in the project folder",
            details={"where": "", "traceback": ""},
        )
    if str(project_dir) not in sys.path:
        sys.path.insert(0, str(project_dir))
    name = _module_name(rel)
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise PredictorLoadError(f"ImportError: cannot import {rel}", details={"where": "", "traceback": ""})
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)

    cls = getattr(module, api.predictor.class_name, None)
    if not isinstance(cls, type):
        raise _contract_error(f"{rel} defines no class named {api.predictor.class_name!r}", f"{rel}:1 in <module>")
    where = _class_where(cls, rel)
    has_predict = callable(getattr(cls, "predict", None))
    has_batch = callable(getattr(cls, "predict_batch", None))
    batching = api.serving.batching is not None
    if batching and not has_batch:
        raise _contract_error(
            f"serving.batching is set but {cls.__name__} has no predict_batch(self, payloads) method", where
        )
    if not batching and not has_predict:
        # A batch-only class is valid with batching; without it nothing would ever be called.
        hint = " (it has predict_batch: set serving.batching to use it)" if has_batch else ""
        raise _contract_error(
            f"{cls.__name__} has no predict(self, payload) method{hint}; add predict, "
            "or set serving.batching and define predict_batch(self, payloads)",
            where,
        )

    instance = cls(dict(api.predictor.config))
    predict = instance.predict if has_predict else None
    predict_batch = instance.predict_batch if batching else None
    return LoadedPredictor(
        instance=instance,
        predict=predict,
        predict_is_async=predict is not None and inspect.iscoroutinefunction(predict),
        predict_batch=predict_batch,
        predict_batch_is_async=predict_batch is not None and inspect.iscoroutinefunction(predict_batch),
        predict_streams=predict is not None and is_stream_function(predict),
    )
