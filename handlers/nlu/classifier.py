"""Intent classifier built at start-up from example phrases; scores one message in microseconds.

Features are TF-IDF blocks (sublinear tf, each block L2-normalised) of character 1-, 2- and
3-grams with start/end markers, and jieba words (see features.py). Two linear models are fitted with
scikit-learn — a linear SVM and a one-vs-rest logistic regression — and their per-class scores, each
standardised across classes, are averaged. Cross-validation on short Chinese queries showed the
pair beats either alone (the SVM with many examples, the regression with few).

After fitting we keep only the coefficients and score one message by hand: a dictionary look-up
per n-gram, then one small dense product — scikit-learn's own predict costs far more per row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC

from handlers.nlu.features import TfidfBlocks, char_ngrams

# Which intent: the SVM and the regression, each standardised across intents, averaged.
# How sure: the regression's own one-vs-rest probability (a sigmoid of its score) for that
# intent. Unlike a softmax over standardised scores it stays low when the message shares
# little with any example (random typing, other topics), which is what the threshold needs.
SVM_C = 1.0
LOGREG_C = 30.0


@dataclass(frozen=True, slots=True)
class Scores:
    label: str  # the best intent
    confidence: float  # 0..1, the regression's probability that the message is that intent
    runner_up: float  # the same probability for the most likely other intent
    known_features: int  # how many of the message's features the examples ever showed


class IntentClassifier:
    """Linear intent scorer; `build` fits it, `score` rates one normalised message."""

    def __init__(self, labels: Sequence[str], features: TfidfBlocks, weights: np.ndarray,
                 bias: np.ndarray) -> None:
        self.labels = tuple(labels)
        self.features = features
        self._weights = weights  # (features, 2 × labels): SVM columns, then regression columns
        self._bias = bias

    @classmethod
    def build(cls, texts: Sequence[str], labels: Sequence[str],
              words: Callable[[str], list[str]]) -> IntentClassifier:
        """Fit on normalised example texts; needs at least two distinct labels."""
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise ValueError("the classifier needs examples of at least two intents")
        features = TfidfBlocks([char_ngrams(1), char_ngrams(2), char_ngrams(3), words])
        matrix = features.fit_transform(texts)
        y = np.array(labels)
        svm = LinearSVC(C=SVM_C).fit(matrix, y)
        # One-vs-rest liblinear fits in seconds for hundreds of intents, where the multinomial
        # solver takes ten times longer for the same accuracy.
        logreg = OneVsRestClassifier(LogisticRegression(C=LOGREG_C, solver="liblinear")).fit(matrix, y)
        logreg_coef = np.vstack([e.coef_ for e in logreg.estimators_]) if len(classes) > 2 \
            else logreg.estimators_[0].coef_
        logreg_intercept = np.concatenate([e.intercept_ for e in logreg.estimators_]) \
            if len(classes) > 2 else logreg.estimators_[0].intercept_
        weights = np.hstack([_per_class(svm.coef_, len(classes)),
                             _per_class(logreg_coef, len(classes))]).astype(np.float32)
        bias = np.concatenate([_per_class_bias(svm.intercept_, len(classes)),
                               _per_class_bias(logreg_intercept, len(classes))]).astype(np.float32)
        return cls(classes, features, np.ascontiguousarray(weights), bias)

    def raw_scores(self, text: str) -> tuple[np.ndarray, np.ndarray, int]:
        """Combined ranking scores, regression scores (both per label), known feature count."""
        columns, values = self.features.vector(text)
        both = (values @ self._weights[columns] + self._bias).reshape(2, -1)
        # Standardise each model's row by hand: np.std's generality costs ~10 µs a call here.
        centered = both - both.mean(axis=1, keepdims=True)
        spread = np.sqrt(np.einsum("ij,ij->i", centered, centered) / both.shape[1]) + 1e-6
        return (centered / spread[:, None]).mean(axis=0), both[1], len(columns)

    def score(self, text: str) -> Scores:
        combined, logreg, known = self.raw_scores(text)
        best = int(combined.argmax())
        probability = 1.0 / (1.0 + np.exp(-logreg))
        confidence = float(probability[best])
        probability[best] = -1.0
        return Scores(self.labels[best], confidence, float(probability.max()), known)

def _per_class(coef: np.ndarray, n_classes: int) -> np.ndarray:
    """(features, classes) coefficients; binary models have one row meaning "second class"."""
    if n_classes == 2:
        return np.hstack([-coef.T, coef.T]) / 2.0
    return coef.T


def _per_class_bias(intercept: np.ndarray, n_classes: int) -> np.ndarray:
    if n_classes == 2:
        return np.concatenate([-intercept, intercept]) / 2.0
    return intercept
