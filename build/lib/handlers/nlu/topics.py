"""What words are about: topic weights from a topic model of general Chinese text.

A handful of examples per intent cannot teach that 红烧肉 is a dish, 周杰伦 a singer or 肾炎 an
illness; a topic model of a large corpus knows that such words share topics with 菜谱, 歌 and
医院. The jionlp package ships one (100 topics over about 96,000 words) as a data file; we read
that file directly, without importing jionlp itself (its import loads far more than we need).
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np

from handlers.nlu.word_space import known_parts, package_file

log = logging.getLogger(__name__)

TOPIC_COUNT = 100
_PACKAGE = "jionlp"
_ARCHIVE = Path("dictionary") / "topic_word_weight.zip"
_MEMBER = "topic_word_weight.json"


class WordTopics:
    """word → {topic: weight}; `vector` sums a message's words into one unit-length topic vector."""

    def __init__(self, weights: dict[str, dict[str, float]]) -> None:
        # Kept as parsed (topic numbers as strings) and converted one word at a time when first
        # met: converting all 96,000 words at start-up would cost seconds.
        self._weights = weights
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._weights)

    def vector(self, words: Iterable[str]) -> np.ndarray | None:
        """The message's topic weights (TOPIC_COUNT, L2-normalised); None if no word is known."""
        total = np.zeros(TOPIC_COUNT, dtype=np.float32)
        known = False
        for part, share in known_parts(words, self._knows):
            topics, weights = self._topics(part)
            total[topics] += weights * share
            known = True
        if not known:
            return None
        norm = float(np.sqrt(total @ total))
        return total / norm if norm else None

    def _knows(self, word: str) -> bool:
        return bool(self._weights.get(word))

    def _topics(self, word: str) -> tuple[np.ndarray, np.ndarray]:
        found = self._arrays.get(word)
        if found is None:
            weights = self._weights[word]
            # Bounded: only words of the model are kept, each at most once.
            found = self._arrays[word] = (
                np.fromiter((int(t) for t in weights), dtype=np.intp, count=len(weights)),
                np.fromiter(weights.values(), dtype=np.float32, count=len(weights)))
        return found


@lru_cache(maxsize=1)
def load_word_topics() -> WordTopics | None:
    """The topic weights shipped with jionlp, read once per process (about a second);
    None, logged, if the package or its data file is missing."""
    archive = package_file(_PACKAGE, _ARCHIVE)
    if archive is None:
        log.warning("word topics not found (is the %s package installed?): intents are "
                    "matched without them", _PACKAGE)
        return None
    try:
        with zipfile.ZipFile(archive) as zipped, zipped.open(_MEMBER) as data:
            weights = json.load(data)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        log.warning("word topics unreadable in %s: %s", archive, error)
        return None
    return WordTopics(weights)
