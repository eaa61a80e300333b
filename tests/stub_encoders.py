"""A tiny deterministic stand-in for an Encoder (hashed bag of words), so index tests run in milliseconds."""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class StubManifest:
    """The manifest fields an index looks at."""

    name: str
    dim: int
    salt: int
    prompts: dict = field(default_factory=dict)

    @property
    def bundle_id(self) -> str:
        return f"{self.name}@{self.salt:016x}"


class StubEncoder:
    """Each word gets a fixed random vector (seeded by word and salt); a text is their normalised sum."""

    def __init__(self, dim: int = 32, salt: int = 0, name: str = "stub"):
        self.manifest = StubManifest(name, dim, salt)
        self.path = Path(f"/nonexistent/{name}-{salt}")
        self.calls = 0

    @property
    def dim(self) -> int:
        return self.manifest.dim

    def word(self, w: str) -> np.ndarray:
        return np.random.default_rng(zlib.crc32(f"{self.manifest.salt}:{w}".encode())).normal(size=self.dim)

    def encode(self, texts, batch_size: int = 32, **kw) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i] += self.word(w)
            out[i] /= max(float(np.linalg.norm(out[i])), 1e-12)
        return out

    encode_queries = encode
    encode_documents = encode


WORDS = ["apple", "banana", "cherry", "river", "mountain", "ocean", "piano", "guitar", "violin", "football",
         "tennis", "chess", "rocket", "planet", "galaxy", "bread", "cheese", "coffee", "winter", "summer", "autumn",
         "spring", "doctor", "nurse", "teacher", "engine", "wheel", "bridge", "castle", "forest", "desert", "island"]


def make_docs(n: int, seed: int = 0) -> list[str]:
    """n short distinct documents of 4-8 words each."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(4, 9))) + f" item{i}" for i in range(n)]
