"""A multi-model "translator": one model per language pair, loaded on demand by thrifty's model cache.

``POST /translator/<src>-<dst>`` with ``{"text": "..."}`` (or a JSON string) answers the text "translated"
by that pair's model: a letter-substitution cipher, deterministic per model and version. Real translation
models are hundreds of megabytes; these are a few kilobytes, but they go through the same path: listed in
the repository, downloaded to the replica's disk cache, loaded into memory by ``load_model``, evicted when
the cache is full.

The repository (``models.source`` in thrifty.yaml, ``models`` relative to the project folder) is generated
by the first replica that starts, if it is missing, the way the iris example trains its model on first
start; ``make_models.py`` writes the same files by hand, e.g. into a folder of your own or a bucket.
"""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path
from typing import Any

import numpy as np

_LOWER = string.ascii_lowercase


class CipherModel:
    def __init__(self, pair: str, version: int, cipher: np.ndarray, embedding: np.ndarray) -> None:
        if sorted(cipher.tolist()) != list(range(26)):
            raise ValueError(f"{pair} v{version}: weights.npy is not a permutation of 26 letters")
        self.pair = pair
        self.version = version
        self.embedding = embedding
        lower = "".join(_LOWER[i] for i in cipher)
        self._table = str.maketrans(_LOWER + _LOWER.upper(), lower + lower.upper())

    def translate(self, text: str) -> str:
        return text.translate(self._table)


class Translator:
    def __init__(self, config: dict[str, Any]) -> None:
        source = Path(config.get("models_dir", "models"))
        if not source.is_dir():
            sys.path.insert(0, str(Path(__file__).parent))
            from make_models import ensure_repository

            ensure_repository(source)

    def load_model(self, path: str) -> CipherModel:
        folder = Path(path)
        meta = json.loads((folder / "meta.json").read_text())
        return CipherModel(
            meta["pair"], int(meta["version"]), np.load(folder / "weights.npy"), np.load(folder / "embedding.npy")
        )

    def predict(self, payload: Any, model: CipherModel) -> dict[str, Any]:
        text = payload.get("text") if isinstance(payload, dict) else payload
        if isinstance(text, bytes):  # a plain-text body sent without a JSON content type
            text = text.decode("utf-8", "replace")
        if not isinstance(text, str):
            raise ValueError('payload: expected {"text": "..."} or a JSON string')
        return {"translation": model.translate(text), "model": model.pair, "version": model.version}
