"""FAQ retrieval: the question variant most similar to the message, with a bounded score.

Cosine similarity of TF-IDF vectors (character bigrams plus jieba words) rather than raw BM25:
BM25 scores grow with message length and collection size, so no single threshold would mean
"similar enough"; a cosine in 0..1 gives operators one number to tune.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from handlers.nlu.features import TfidfBlocks, char_ngrams
from handlers.nlu.settings import FaqEntry

# Up to this many (features × question variants) cells the index is kept dense (16 MB).
_DENSE_CELLS = 4_000_000


@dataclass(frozen=True, slots=True)
class FaqHit:
    entry: FaqEntry
    similarity: float


class FaqIndex:
    """All question variants of all entries, searchable by similarity."""

    def __init__(self, entries: Sequence[FaqEntry], normalize: Callable[[str], str],
                 words: Callable[[str], list[str]]) -> None:
        self._entries = list(entries)
        self._normalize = normalize
        self._exact: dict[str, int] = {}
        texts: list[str] = []
        owners: list[int] = []
        for position, entry in enumerate(self._entries):
            for question in entry.questions:
                normalized = normalize(question)
                if normalized:
                    self._exact.setdefault(normalized, position)
                    texts.append(normalized)
                    owners.append(position)
        self._owners = np.array(owners, dtype=np.intp)
        self._features = TfidfBlocks([char_ngrams(2), words])
        self._columns: sp.csr_matrix | np.ndarray | None = None
        if texts:
            # Two unit-length blocks: dividing by √2 makes the whole vector unit length, so a
            # dot product is the cosine. Stored feature-major: a message touches few features,
            # so we read only their rows.
            matrix = self._features.fit_transform(texts) / np.float32(np.sqrt(2.0))
            columns = sp.csr_matrix(matrix.T)
            # Row slicing a sparse matrix costs ~200 µs in scipy; a dense gather ~5 µs.
            small = matrix.shape[0] * matrix.shape[1] <= _DENSE_CELLS
            self._columns = columns.toarray() if small else columns

    def exact(self, normalized: str) -> FaqEntry | None:
        position = self._exact.get(normalized)
        return None if position is None else self._entries[position]

    def search(self, normalized: str) -> FaqHit | None:
        """The best entry by its most similar question variant, or None with no overlap."""
        if self._columns is None or not normalized:
            return None
        columns, values = self._features.vector(normalized)
        if len(columns) == 0:
            return None
        similarities = np.asarray(
            self._columns[columns].T @ (values / np.float32(np.sqrt(2.0)))).ravel()
        best = int(similarities.argmax())
        if similarities[best] <= 0.0:
            return None
        return FaqHit(self._entries[int(self._owners[best])], float(similarities[best]))
