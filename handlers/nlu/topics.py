"""What words are about: topic weights from a topic model of general Chinese text.

A handful of examples per intent cannot teach that 红烧肉 is a dish, 周杰伦 a singer or 肾炎 an
illness; a topic model of a large corpus knows that such words share topics with 菜谱, 歌 and
医院. The jionlp package ships one (100 topics over about 96,000 words) as a data file; we read
that file directly, without importing jionlp itself (its import loads far more than we need).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import zipfile
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np

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
        for word in words:
            topics = self._topics(word)
            if topics is not None:
                total[topics[0]] += topics[1]
                known = True
            elif len(word) > 1:
                # A word the model never saw (a dish, a title) is read from its characters,
                # together worth one word: 排骨 is unknown, 排 and 骨 are not.
                for char in word:
                    topics = self._topics(char)
                    if topics is not None:
                        total[topics[0]] += topics[1] / len(word)
                        known = True
        if not known:
            return None
        norm = float(np.sqrt(total @ total))
        return total / norm if norm else None

    def _topics(self, word: str) -> tuple[np.ndarray, np.ndarray] | None:
        found = self._arrays.get(word)
        if found is None:
            weights = self._weights.get(word)
            if not weights:
                return None
            # Bounded: only words of the model are kept, each at most once.
            found = self._arrays[word] = (
                np.fromiter((int(t) for t in weights), dtype=np.intp, count=len(weights)),
                np.fromiter(weights.values(), dtype=np.float32, count=len(weights)))
        return found


@lru_cache(maxsize=1)
def load_word_topics() -> WordTopics | None:
    """The topic weights shipped with jionlp, read once per process (about a second);
    None, logged, if the package or its data file is missing."""
    spec = importlib.util.find_spec(_PACKAGE)  # locates the package without running it
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        archive = Path(location) / _ARCHIVE
        if archive.is_file():
            try:
                with zipfile.ZipFile(archive) as zipped, zipped.open(_MEMBER) as data:
                    weights = json.load(data)
            except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
                log.warning("word topics unreadable in %s: %s", archive, error)
                return None
            return WordTopics(weights)
    log.warning("word topics not found (is the %s package installed?): intents are "
                "matched without them", _PACKAGE)
    return None
