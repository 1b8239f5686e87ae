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
import math
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
        # Kept as parsed (topic numbers as strings): converting 96,000 small dicts at start-up
        # costs more than converting the few words of each message.
        self._weights = weights

    def __len__(self) -> int:
        return len(self._weights)

    def vector(self, words: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """Topic indices and weights (L2-normalised) of a message's words; empty if none known."""
        totals: dict[int, float] = {}
        for word in words:
            topics = self._weights.get(word)
            if topics:
                _add(totals, topics, 1.0)
            elif len(word) > 1:
                # A word the model never saw (a dish, a title) is read from its characters,
                # together worth one word: 排骨 is unknown, 排 and 骨 are not.
                for char in word:
                    topics = self._weights.get(char)
                    if topics:
                        _add(totals, topics, 1.0 / len(word))
        norm = math.sqrt(sum(v * v for v in totals.values()))
        if not norm:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
        return (np.fromiter(totals, dtype=np.intp, count=len(totals)),
                np.fromiter((v / norm for v in totals.values()), dtype=np.float32,
                            count=len(totals)))


def _add(totals: dict[int, float], topics: dict[str, float], share: float) -> None:
    for topic, weight in topics.items():
        index = int(topic)
        totals[index] = totals.get(index, 0.0) + weight * share


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
