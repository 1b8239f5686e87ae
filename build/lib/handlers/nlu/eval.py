"""Measure the intent matcher on labelled messages: accuracy, F1, confusions, latency."""

from __future__ import annotations

import csv
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from handlers.matching import Matcher
from handlers.nlu.settings import IntentSpec, NluSettings

if TYPE_CHECKING:
    from handlers.nlu.engine import IntentEngine

# Same as handlers.nlu.engine.NONE_LABEL; repeated so that registering the command does not
# import scikit-learn (the engine is imported when an evaluation runs).
NONE_LABEL = "none"


class EvalError(Exception):
    """A problem with the evaluation's input files, reported as one clear line."""


@dataclass(frozen=True, slots=True)
class Example:
    label: str
    text: str


@dataclass
class Report:
    total: int
    accuracy: float
    macro_f1: float
    per_label: dict[str, dict[str, float]]
    confused: list[tuple[str, str, int]]
    p50_ms: float
    p99_ms: float
    build_s: float
    train_examples: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {
            "examples": self.total, "accuracy": round(self.accuracy, 4),
            "macro_f1": round(self.macro_f1, 4), "p50_ms": round(self.p50_ms, 4),
            "p99_ms": round(self.p99_ms, 4), "build_s": round(self.build_s, 3),
            "train_examples": self.train_examples,
            "per_intent": self.per_label,
            "confused": [{"expected": a, "predicted": b, "count": n} for a, b, n in self.confused],
            **self.extra,
        }


def load_examples(path: str | Path) -> list[Example]:
    """A TSV file with the header `label<TAB>text`; `none` labels a message of no intent."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise EvalError(f"{path}: cannot read: {error.strerror or error}") from None
    rows = list(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["label", "text"]:
        raise EvalError(f"{path}:1: expected the header 'label<TAB>text'")
    examples = []
    for number, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise EvalError(f"{path}:{number}: expected 'label<TAB>text'")
        examples.append(Example(row[0].strip(), "\t".join(row[1:]).strip()))
    if not examples:
        raise EvalError(f"{path}: no examples")
    return examples


def sample_shots(examples: Sequence[Example], shots: int, seed: int) -> list[Example]:
    """At most `shots` examples per label, drawn reproducibly from `seed`."""
    by_label: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_label[example.label].append(example)
    rng = random.Random(seed)
    kept: list[Example] = []
    for label in sorted(by_label):
        pool = by_label[label]
        kept.extend(pool if len(pool) <= shots else rng.sample(pool, shots))
    return kept


def build_from_examples(examples: Sequence[Example], nlu: NluSettings) -> IntentEngine:
    """One intent per label (replying with its own name); `none` rows teach out-of-scope."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for example in examples:
        by_label[example.label].append(example.text)
    out_of_scope = [*nlu.out_of_scope, *by_label.pop(NONE_LABEL, [])]
    try:
        intents = [IntentSpec(name=label, examples=texts, reply=label)
                   for label, texts in sorted(by_label.items())]
    except ValueError as error:
        raise EvalError(f"bad training label: {error}") from None
    settings = nlu.model_copy(update={"out_of_scope": out_of_scope})
    from handlers.nlu.engine import IntentEngine

    return IntentEngine.build(intents, [], settings)


def evaluate(matcher: Matcher, examples: Sequence[Example], *, progress: bool = False) -> Report:
    """Predict every example; a fallback (None) counts as `none`."""
    expected: list[str] = []
    predicted: list[str] = []
    timings: list[float] = []
    step = max(len(examples) // 10, 1)
    # Warm up (first calls fill jieba's and numpy's caches) so latency reflects steady state.
    for example in examples[:20]:
        matcher.match(example.text)
    for position, example in enumerate(examples, start=1):
        start = time.perf_counter()
        match = matcher.match(example.text)
        timings.append(time.perf_counter() - start)
        expected.append(example.label)
        predicted.append(match.intent if match is not None else NONE_LABEL)
        if progress and (position % step == 0 or position == len(examples)):
            print(f"  evaluated {position}/{len(examples)}", file=sys.stderr, flush=True)
    return score_predictions(expected, predicted, timings)


def score_predictions(expected: Sequence[str], predicted: Sequence[str],
                      timings: Sequence[float]) -> Report:
    labels = sorted(set(expected) | set(predicted))
    true_positive: Counter[str] = Counter()
    predicted_count = Counter(predicted)
    expected_count = Counter(expected)
    confusions: Counter[tuple[str, str]] = Counter()
    for gold, guess in zip(expected, predicted):
        if gold == guess:
            true_positive[gold] += 1
        else:
            confusions[(gold, guess)] += 1
    per_label: dict[str, dict[str, float]] = {}
    for label in labels:
        precision = true_positive[label] / predicted_count[label] if predicted_count[label] else 0.0
        recall = true_positive[label] / expected_count[label] if expected_count[label] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {"precision": round(precision, 4), "recall": round(recall, 4),
                            "f1": round(f1, 4), "support": expected_count[label]}
    # Macro-F1 over the labels the test set contains: a label only ever guessed is a mistake
    # already counted in those labels' precision.
    gold_labels = sorted(expected_count)
    macro_f1 = sum(per_label[label]["f1"] for label in gold_labels) / len(gold_labels)
    ordered = sorted(timings)

    def percentile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0 if ordered else 0.0

    return Report(
        total=len(expected),
        accuracy=sum(true_positive.values()) / len(expected) if expected else 0.0,
        macro_f1=macro_f1, per_label=per_label,
        confused=[(a, b, n) for (a, b), n in confusions.most_common(10)],
        p50_ms=percentile(0.50), p99_ms=percentile(0.99), build_s=0.0,
    )


def format_report(report: Report) -> str:
    lines = [
        f"examples      {report.total}",
        f"accuracy      {report.accuracy:.4f}",
        f"macro-F1      {report.macro_f1:.4f}",
        f"latency       p50 {report.p50_ms:.3f} ms   p99 {report.p99_ms:.3f} ms per message",
        f"build         {report.build_s:.2f} s"
        + (f" from {report.train_examples} examples" if report.train_examples else ""),
        "",
        f"{'intent':<24} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}",
    ]
    for label, row in report.per_label.items():
        lines.append(f"{label:<24} {row['precision']:>9.3f} {row['recall']:>7.3f} "
                     f"{row['f1']:>7.3f} {int(row['support']):>8}")
    if report.confused:
        lines += ["", "most confused (expected → predicted: count)"]
        lines += [f"  {a} → {b}: {n}" for a, b, n in report.confused]
    return "\n".join(lines)
