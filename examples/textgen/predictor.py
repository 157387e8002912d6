"""A small generative model that needs no download: a word-level trigram model of a bundled public-domain text.

Built in ``__init__`` from ``corpus.txt`` (chapter 1 of Jane Austen's *Pride and Prejudice*, 1813; public
domain, Project Gutenberg eBook #1342). ``predict`` is an async generator: it yields one token at a time, each
after ``token_delay`` (a stand-in for a real model's per-token compute), so thrifty streams it to the client as
it is produced. Sampling is seeded: the same payload gives the same text.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

# Words (with inner ' and -), "Mr." and "Mrs." as one word, and punctuation; quotation marks are dropped.
_TOKEN = re.compile(r"Mrs?\.|[A-Za-z]+(?:['-][A-Za-z]+)*|[0-9]+|[^\sA-Za-z0-9\"]")
_NO_SPACE_BEFORE = {".", ",", ";", ":", "!", "?", ")"}
_SENTENCE_END = {".", "!", "?"}


def parse_delay_s(value: Any) -> float:
    """'20ms', '0.5s' or a number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    return float(text.removesuffix("s"))


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


class TrigramModel:
    def __init__(self, tokens: list[str]) -> None:
        self.next: dict[tuple[str, str], list[str]] = defaultdict(list)
        for a, b, c in zip(tokens, tokens[1:], tokens[2:], strict=False):
            self.next[(a, b)].append(c)
        # Sentence openings: the two tokens after a sentence end.
        self.starts = [
            (tokens[i + 1], tokens[i + 2]) for i in range(len(tokens) - 2) if tokens[i] in _SENTENCE_END
        ] or [(tokens[0], tokens[1])]

    def generate(self, prompt: list[str], max_tokens: int, rng: random.Random) -> list[str]:
        """``max_tokens`` tokens continuing ``prompt`` (or a random sentence opening)."""
        out: list[str] = []
        if len(prompt) >= 2 and (prompt[-2], prompt[-1]) in self.next:
            a, b = prompt[-2], prompt[-1]
        else:
            a, b = rng.choice(self.starts)
            out += [a, b]
        while len(out) < max_tokens:
            options = self.next.get((a, b))
            if not options:
                a, b = rng.choice(self.starts)  # a dead end (the end of the text): start a new sentence
                out += [".", a, b] if b not in _SENTENCE_END else [a, b]
                continue
            c = rng.choice(options)
            out.append(c)
            a, b = b, c
        return out[:max_tokens]


def detokenize(tokens: list[str], first: bool) -> list[str]:
    """Each token as the text chunk to send: a leading space except before punctuation (and at the start)."""
    chunks = []
    for i, t in enumerate(tokens):
        chunks.append(t if (first and i == 0) or t in _NO_SPACE_BEFORE else " " + t)
    return chunks


class TextGenerator:
    def __init__(self, config: dict[str, Any]) -> None:
        corpus = Path(config.get("corpus", "corpus.txt"))
        if not corpus.is_absolute():
            corpus = Path(__file__).resolve().parent / corpus
        self.model = TrigramModel(tokenize(corpus.read_text(encoding="utf-8")))
        self.token_delay_s = parse_delay_s(config.get("token_delay", "20ms"))
        self.max_tokens = int(config.get("max_tokens", 64))
        self.seed = int(config.get("seed", 0))

    def plan(self, payload: Any) -> list[str]:
        """The chunks a request will get (no delay): payload {"prompt", "max_tokens", "seed"}, all optional."""
        payload = payload if isinstance(payload, dict) else {"prompt": payload if isinstance(payload, str) else ""}
        prompt = tokenize(str(payload.get("prompt", "")))
        max_tokens = max(1, min(int(payload.get("max_tokens", self.max_tokens)), self.max_tokens))
        rng = random.Random(int(payload.get("seed", self.seed)))
        tokens = self.model.generate(prompt, max_tokens, rng)
        return detokenize(tokens, first=not prompt)

    async def predict(self, payload: Any) -> AsyncIterator[str]:
        for chunk in self.plan(payload):
            await asyncio.sleep(self.token_delay_s)  # a real model computes each token; this one pretends
            yield chunk
