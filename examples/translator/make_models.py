"""Write the translator's model repository: one small numpy model per language pair.

    python make_models.py [--out models] [--version 1] [--pairs en-fr,fr-en]

Layout (what ``models.source`` expects): ``<out>/<src>-<dst>/<version>/weights.npy`` + ``meta.json``.
A model is a letter-substitution cipher (a permutation of a-z) and a small random embedding matrix that
stands in for real weights (so each model has some bytes to cache). Everything derives from the pair and
the version, so the files are the same on every machine; ``dst-src`` undoes ``src-dst`` (version 1).

Writes into a temporary folder and renames it into place, so a reader (a replica listing the repository,
or a second replica generating it at the same moment) never sees half a model.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "nl", "sv")  # 8 x 7 = 56 pairs
EMBEDDING_SHAPE = (64, 32)  # 8 KiB of float32 per model


def all_pairs() -> list[str]:
    return [f"{a}-{b}" for a, b in itertools.permutations(LANGUAGES, 2)]


def _rng(key: str) -> np.random.Generator:
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return np.random.default_rng(seed)


def cipher(pair: str, version: int) -> np.ndarray:
    """The permutation of 0..25 that model ``pair`` version ``version`` maps letters with."""
    src, dst = pair.split("-")
    if version == 1 and src > dst:
        return np.argsort(cipher(f"{dst}-{src}", 1))  # the inverse: dst-src undoes src-dst
    return _rng(f"{pair}/{version}").permutation(26)


def write_model(out: Path, pair: str, version: int) -> Path:
    """Write one version atomically; returns its folder. An existing version is left as it is."""
    final = out / pair / str(version)
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=final.parent))
    try:
        weights = {
            "cipher": cipher(pair, version).astype(np.int16),
            "embedding": _rng(f"{pair}/{version}/emb").standard_normal(EMBEDDING_SHAPE).astype(np.float32),
        }
        np.save(tmp / "weights.npy", weights["cipher"])
        np.save(tmp / "embedding.npy", weights["embedding"])
        (tmp / "meta.json").write_text(json.dumps({"pair": pair, "version": version}) + "\n")
        os.rename(tmp, final)
    except OSError:
        if not final.exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def make_models(out: Path, pairs: list[str] | None = None, versions: tuple[int, ...] = (1,)) -> list[Path]:
    return [write_model(out, pair, v) for pair in (pairs or all_pairs()) for v in versions]


def ensure_repository(out: Path) -> bool:
    """Create the whole default repository (56 pairs, and en-fr version 2) at ``out`` unless it exists.

    Built in a temporary folder and renamed into place in one step, so a replica that finds ``out`` finds
    it complete (two replicas starting together: one rename wins, the other's copy is dropped).
    Returns whether this call created it.
    """
    if out.is_dir():
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        make_models(tmp)
        make_models(tmp, ["en-fr"], (2,))  # a second version, to try pinning
        os.rename(tmp, out)
    except OSError:
        if not out.is_dir():
            raise
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(Path(__file__).parent / "models"), help="repository folder")
    p.add_argument("--version", type=int, default=1, help="version to write")
    p.add_argument("--pairs", default="", help="comma-separated pairs (default: all 56)")
    args = p.parse_args(argv)
    pairs = [x for x in args.pairs.split(",") if x] or None
    written = make_models(Path(args.out), pairs, (args.version,))
    print(f"{len(written)} model version(s) in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
