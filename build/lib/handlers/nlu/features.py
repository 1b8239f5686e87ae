"""TF-IDF features fitted with scikit-learn, computed for one message by hand.

Scikit-learn's per-call overhead (~100–300 µs per `transform` of one row) would dominate the
message path, so after fitting we keep only vocabularies and IDF weights and rebuild the same
vector with dictionary look-ups.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

Analyzer = Callable[[str], list[str]]


def char_ngrams(n: int) -> Analyzer:
    """Character n-grams; for n > 1 with start/end markers ("^查" differs from "查")."""

    def grams(text: str) -> list[str]:
        padded = f"^{text}$" if n > 1 else text
        return [padded[i:i + n] for i in range(len(padded) - n + 1) if " " not in padded[i:i + n]]

    return grams


class TfidfBlocks:
    """Several TF-IDF blocks side by side, sublinear tf, each block L2-normalised."""

    def __init__(self, analyzers: Sequence[Analyzer], weights: Sequence[float] | None = None) -> None:
        self._analyzers = tuple(analyzers)
        # A block's length after normalisation: how much it counts against the others.
        self._weights = tuple(weights) if weights is not None else (1.0,) * len(self._analyzers)
        self._vocabularies: tuple[dict[str, int], ...] = ()
        self._idf = np.zeros(0, dtype=np.float32)

    @property
    def size(self) -> int:
        return len(self._idf)

    def fit_transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        vectorizers = [
            TfidfVectorizer(analyzer=a, sublinear_tf=True, lowercase=False, dtype=np.float32)
            for a in self._analyzers
        ]
        blocks = []
        for vectorizer, weight in zip(vectorizers, self._weights):
            try:
                blocks.append(vectorizer.fit_transform(texts) * np.float32(weight))
            except ValueError:  # a block with no terms at all (e.g. only one-character texts)
                blocks.append(sp.csr_matrix((len(texts), 0), dtype=np.float32))
                vectorizer.vocabulary_, vectorizer.idf_ = {}, np.zeros(0)
        offsets = np.cumsum([0] + [b.shape[1] for b in blocks])
        self._vocabularies = tuple(
            {term: int(col) + int(offset) for term, col in v.vocabulary_.items()}
            for v, offset in zip(vectorizers, offsets)
        )
        self._idf = np.concatenate([np.asarray(v.idf_) for v in vectorizers]).astype(np.float32)
        return sp.hstack(blocks, format="csr", dtype=np.float32)

    def vector(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and values of one text, equal to the fitted `transform` row."""
        columns: list[int] = []
        values: list[float] = []
        idf = self._idf
        for analyzer, vocabulary, weight in zip(self._analyzers, self._vocabularies, self._weights):
            start = len(values)
            for term, count in Counter(analyzer(text)).items():
                column = vocabulary.get(term)
                if column is not None:
                    columns.append(column)
                    # Sublinear tf; most terms occur once, and log(1) is 0.
                    tf = 1.0 + math.log(count) if count > 1 else 1.0
                    values.append(tf * float(idf[column]))
            norm = math.sqrt(sum(v * v for v in values[start:]))
            if norm:
                values[start:] = [v * weight / norm for v in values[start:]]
        return np.array(columns, dtype=np.intp), np.array(values, dtype=np.float32)
