"""Word segmentation with jieba, taught the operator's brand, product and SKU words."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import lru_cache

import jieba
import jieba.posseg

# jieba logs its dictionary loading at DEBUG through its own logger; keep start-up quiet.
jieba.setLogLevel(logging.WARNING)


class Segmenter:
    """A private jieba tokenizer: the global one is shared state we must not touch."""

    def __init__(self, words: Iterable[str] = ()) -> None:
        self._tokenizer = jieba.Tokenizer()
        # Loads (or builds and caches) the main dictionary now rather than on the first message.
        self._tokenizer.initialize()
        for word in words:
            word = word.strip()
            if word:
                # A high frequency makes jieba keep the word whole even inside longer text.
                self._tokenizer.add_word(word, freq=max(self._tokenizer.suggest_freq(word), 1000))
        self._tagger = jieba.posseg.POSTokenizer(self._tokenizer)
        # The classifier and the FAQ both segment the same message: segment it once.
        self.search_words = lru_cache(maxsize=256)(self._search_words)  # type: ignore[method-assign]

    def words(self, text: str) -> list[str]:
        """Words in order; spaces dropped."""
        return [w for w in self._tokenizer.lcut(text, HMM=True) if not w.isspace()]

    def search_words(self, text: str) -> list[str]:
        """Words plus the shorter words inside long ones ("会员积分" → 会员, 积分, 会员积分)."""
        return self._search_words(text)

    def _search_words(self, text: str) -> list[str]:
        return [w for w in self._tokenizer.lcut_for_search(text, HMM=False) if not w.isspace()]

    def tags(self, text: str) -> list[str]:
        """Part-of-speech tags in order ("我想听周杰伦" → r, v, v, nr): jieba's dictionary knows
        which words are names, places, times and numbers, which examples alone cannot teach."""
        # Without HMM: tagging unknown words by HMM costs up to a millisecond a message.
        return [pair.flag for pair in self._tagger.lcut(text, HMM=False) if not pair.word.isspace()]
