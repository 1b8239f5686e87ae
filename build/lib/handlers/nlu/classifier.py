"""Intent classifier built at start-up from example phrases; scores one message in microseconds.

Features are TF-IDF blocks (sublinear tf, each block L2-normalised) of character 1-, 2- and
3-grams with start/end markers, jieba words, and jieba part-of-speech tags and tag pairs
(see features.py), plus the message's words summed into topics of a general topic model
(topics.py) and into general word vectors (word_vectors.py). Tags, topics and vectors add
knowledge of the language that a few examples cannot give — that 周杰伦 is a person and a
singer, 杭州 a place, 红烧肉 a dish, 航班 close to 机票 — and help most with few examples per
intent.

Two linear models are fitted with scikit-learn, a linear SVM (hinge loss) and a one-vs-rest
logistic regression. Cross-validation on short Chinese queries showed the pair ranks intents
better than either alone (the SVM with many examples per intent, the regression with few).

After fitting we keep only the coefficients and score one message by hand: a dictionary look-up
per n-gram, then one small dense product — scikit-learn's own predict costs far more per row.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Protocol

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC

from handlers.nlu.features import TfidfBlocks, char_ngrams
from handlers.nlu.topics import TOPIC_COUNT, WordTopics
from handlers.nlu.word_vectors import VECTOR_SIZE, WordVectors

# Which intent: the SVM and the regression, each scaled to unit spread (measured over the
# training examples, so the scaling folds into the weights), summed.
# How sure: the regression's own one-vs-rest probability (a sigmoid of its score) for that
# intent. Unlike a softmax over standardised scores it stays low when the message shares
# little with any example (random typing, other topics), which is what the threshold needs.

# Relative weight of the feature blocks (char 1-, 2-, 3-grams, words, tags), chosen by
# cross-validation on a public 31-intent data set of short queries.
BLOCK_WEIGHTS = (1.0, 1.0, 0.7, 1.0, 0.5)
# Length of the topic vector and of the word vector next to those blocks (same
# cross-validation; of word-vector lengths 0.3–3.0, longer than 2.0 lost with all examples,
# gained nothing with ten per intent, and kept the SVM from converging).
TOPIC_WEIGHT = 0.6
VECTOR_WEIGHT = 2.0
# The SVM: hinge loss at C 0.5 (cross-validated 0.916 with all examples against 0.913 for
# squared hinge at C 1.0; +0.003 on average over three draws of the folds), counting up to 1.5
# times the regression (see _svm_share).
SVM_C = 0.5
SVM_LOSS = "hinge"
SVM_MAX_SHARE = 1.5
# Its stopping tolerance: 1e-2 instead of liblinear's 1e-4 fits the 200 intents × 25 examples
# in 9 s instead of 11.4 s; cross-validated 0.9152 / 0.9191 / 0.9195 on three draws of the
# folds against 0.9156 / 0.9191 / 0.9195 (one message; 0.1 saved 1 s more but lost 0.0017 on
# the first draw). Both liblinear models visit examples in a fixed pseudo-random order
# (random_state=0), so a build is reproducible even when stopped this early.
SVM_TOL = 1e-2
# The regression's stopping tolerance: liblinear's default 1e-4 spent 33 s of the build for 200
# intents × 25 examples, 0.1 spends 14 s; cross-validated accuracy was identical and the
# probabilities moved by at most 0.008.
LOGREG_TOL = 0.1
LOGREG_C = 30.0
MULTINOMIAL_C = 10.0


@dataclass(frozen=True, slots=True)
class Scores:
    label: str  # the best intent
    confidence: float  # 0..1, the regression's probability that the message is that intent
    runner_up: float  # the same probability for the most likely other intent
    known_features: int  # how many of the message's features the examples ever showed


class WordSpace(Protocol):
    """Words of general Chinese mapped to dense vectors (topics, word vectors)."""

    def vector(self, words: Iterable[str]) -> np.ndarray | None: ...


@dataclass(frozen=True, slots=True)
class DenseBlock:
    """A dense feature block: a message's words summed in a word space, scaled to `weight`.

    A message none of whose words the space knows ("qwerty") is given `mean`, the examples'
    average, rather than zeros: the one-vs-rest regression learns the part every example shares
    as evidence against each intent, so without it such a message looked more like every intent
    than real ones did. (Centring the examples' rows instead does the same and cross-validated
    alike; this way the fitted model is the one cross-validated without either.)"""
    space: WordSpace
    size: int
    weight: float
    mean: np.ndarray


class IntentClassifier:
    """Linear intent scorer; `build` fits it, `score` rates one normalised message."""

    def __init__(self, labels: Sequence[str], features: TfidfBlocks, weights: np.ndarray,
                 bias: np.ndarray, dense: Sequence[DenseBlock] = (),
                 words: Callable[[str], list[str]] | None = None) -> None:
        # weights: (features, 2 × labels): combined ranking columns, then regression columns;
        # each dense block's rows follow the TF-IDF rows, in order.
        self.labels = tuple(labels)
        self.features = features
        self._weights = weights
        self._bias = bias
        self._words = words
        # Per block: its space, its rows of the weights scaled by its weight, and the scores
        # of its mean (for messages it knows no word of, see DenseBlock).
        self._dense: list[tuple[WordSpace, np.ndarray, np.ndarray]] = []
        if words is not None:
            start = features.size
            for block in dense:
                rows = weights[start:start + block.size]
                self._dense.append((block.space, rows * block.weight, block.mean @ rows))
                start += block.size

    @classmethod
    def build(cls, texts: Sequence[str], labels: Sequence[str], words: Callable[[str], list[str]],
              tags: Callable[[str], list[str]], topics: WordTopics | None = None,
              vectors: WordVectors | None = None) -> IntentClassifier:
        """Fit on normalised example texts; needs at least two distinct labels."""
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise ValueError("the classifier needs examples of at least two intents")
        features = TfidfBlocks([char_ngrams(1), char_ngrams(2), char_ngrams(3), words,
                                _tag_ngrams(tags)], BLOCK_WEIGHTS)
        blocks = [features.fit_transform(texts)]
        dense: list[DenseBlock] = []
        spaces = ((topics, TOPIC_COUNT, TOPIC_WEIGHT), (vectors, VECTOR_SIZE, VECTOR_WEIGHT))
        for space, size, weight in spaces:
            if space is not None:
                block = _dense_block(texts, words, space, size, weight)
                blocks.append(block[0])
                dense.append(block[1])
        matrix = sp.hstack(blocks, format="csr", dtype=np.float32)
        y = np.array(labels)
        # One-vs-rest liblinear, solved in the dual (features far outnumber examples here):
        # seconds for hundreds of intents, where the primal or multinomial solvers take minutes
        # on well-separated examples.
        logreg = OneVsRestClassifier(
            LogisticRegression(C=LOGREG_C, solver="liblinear", dual=True,
                               tol=LOGREG_TOL, random_state=0)).fit(matrix, y)
        logreg_coef = np.vstack([e.coef_ for e in logreg.estimators_]) if len(classes) > 2 \
            else logreg.estimators_[0].coef_
        logreg_intercept = np.concatenate([e.intercept_ for e in logreg.estimators_]) \
            if len(classes) > 2 else logreg.estimators_[0].intercept_
        n = len(classes)
        lr_w, lr_b = _per_class(logreg_coef, n), _per_class_bias(logreg_intercept, n)
        share = _svm_share(labels)
        rank_w, rank_b = lr_w, lr_b
        if share == 0.0 and n > 2:
            # With few examples per intent a multinomial regression ranks intents better than
            # the one-vs-rest one (each of whose models sees ten examples against hundreds);
            # the one-vs-rest probabilities still give the confidence.
            multi = LogisticRegression(C=MULTINOMIAL_C, max_iter=300).fit(matrix, y)
            rank_w, rank_b = multi.coef_.T, multi.intercept_
        # Each model's typical spread of scores across intents on the training examples.
        lr_spread = float(np.mean(np.std(matrix @ rank_w + rank_b, axis=1))) or 1.0
        rank_w, rank_b = rank_w / lr_spread, rank_b / lr_spread
        if share > 0.0:  # the SVM is fitted only when it counts
            svm = LinearSVC(C=SVM_C, loss=SVM_LOSS, tol=SVM_TOL, random_state=0).fit(matrix, y)
            svm_w, svm_b = _per_class(svm.coef_, n), _per_class_bias(svm.intercept_, n)
            svm_spread = float(np.mean(np.std(matrix @ svm_w + svm_b, axis=1))) or 1.0
            rank_w = rank_w + share * svm_w / svm_spread
            rank_b = rank_b + share * svm_b / svm_spread
        weights = np.hstack([rank_w, lr_w]).astype(np.float32)
        bias = np.concatenate([rank_b, lr_b]).astype(np.float32)
        return cls(classes, features, np.ascontiguousarray(weights), bias, dense, words)

    def raw_scores(self, text: str) -> tuple[np.ndarray, int]:
        """Ranking scores then regression scores (2 × labels) and the known feature count
        (n-grams, words and tags only: a message of unseen words is unknown whatever its topics
        and vectors)."""
        columns, values = self.features.vector(text)
        scores = values @ self._weights[columns] + self._bias
        if self._dense and self._words is not None:
            words = self._words(text)
            for space, weights, mean_scores in self._dense:
                vector = space.vector(words)
                scores += vector @ weights if vector is not None else mean_scores
        return scores, len(columns)

    def score(self, text: str) -> Scores:
        scores, known = self.raw_scores(text)
        n = len(self.labels)
        best = int(scores[:n].argmax())
        logreg = scores[n:]
        confidence = float(logreg[best])
        logreg[best] = -np.inf
        runner_up = float(logreg.max())
        return Scores(self.labels[best], _sigmoid(confidence), _sigmoid(runner_up), known)


def _dense_block(texts: Sequence[str], words: Callable[[str], list[str]], space: WordSpace,
                 size: int, weight: float) -> tuple[sp.csr_matrix, DenseBlock]:
    """The examples' rows of one dense block and the block."""
    dense = np.zeros((len(texts), size), dtype=np.float32)
    known = np.zeros(len(texts), dtype=bool)
    for row, text in enumerate(texts):
        vector = space.vector(words(text))
        if vector is not None:
            dense[row] = vector * weight
            known[row] = True
    mean = dense[known].mean(axis=0) if known.any() else np.zeros(size, dtype=np.float32)
    return sp.csr_matrix(dense), DenseBlock(space, size, weight, mean.astype(np.float32))


def _svm_share(labels: Sequence[str]) -> float:
    """How much the SVM counts next to the regression: cross-validation showed the regression
    alone ranks best with about 10 examples per intent and the pair best from about 30 on (the
    hinge-loss SVM at 1.5 times the regression: 0.9156 against 0.9152 at 1.0)."""
    typical = float(np.median(list(Counter(labels).values())))
    return min(max((typical - 10.0) / 20.0, 0.0), 1.0) * SVM_MAX_SHARE


def _tag_ngrams(tags: Callable[[str], list[str]]) -> Callable[[str], list[str]]:
    def grams(text: str) -> list[str]:
        sequence = ["^", *tags(text), "$"]
        return [*sequence[1:-1], *(f"{a} {b}" for a, b in pairwise(sequence))]

    return grams


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x > -500 else 0.0


def _per_class(coef: np.ndarray, n_classes: int) -> np.ndarray:
    """(features, classes) coefficients; binary models have one row meaning "second class",
    so the first class gets its negation (a sigmoid of either is then that class's probability)."""
    if n_classes == 2:
        return np.hstack([-coef.T, coef.T])
    return coef.T


def _per_class_bias(intercept: np.ndarray, n_classes: int) -> np.ndarray:
    if n_classes == 2:
        return np.concatenate([-intercept, intercept])
    return intercept
