"""Benchmark: per-message matching latency for 200 intents × 25 examples (synthetic).

Prints build time, p50/p99 per message for the intent engine and, measured in the same run on
the same messages, for a plain scikit-learn TF-IDF + LinearSVC pipeline predicting one message
at a time, plus their ratio. Figures only; nothing here asserts a time.

    .venv/bin/python bench/nlu.py [--intents 200] [--examples 25] [--messages 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handlers.nlu.engine import IntentEngine
from handlers.nlu.settings import IntentSpec, NluSettings

_HAN = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
_OPENERS = ["我想", "帮我", "请问", "能不能", "我要", "麻烦", "想问下", "", "那个", "亲"]
_CLOSERS = ["", "吗", "呢", "啊", "一下", "可以吗", "怎么弄", "谢谢", "呀", "好吗"]


def synthetic_intents(intents: int, examples: int, seed: int) -> tuple[list[IntentSpec],
                                                                      list[tuple[str, str]]]:
    """Intents whose examples share a few topic words; returns specs and held-out messages."""
    rng = random.Random(seed)
    specs: list[IntentSpec] = []
    held_out: list[tuple[str, str]] = []
    for number in range(intents):
        topic = ["".join(rng.sample(_HAN, rng.randint(2, 3))) for _ in range(4)]
        verbs = ["".join(rng.sample(_HAN, 2)) for _ in range(3)]

        def phrase(verbs: list[str] = verbs, topic: list[str] = topic) -> str:
            return (rng.choice(_OPENERS) + rng.choice(verbs) + rng.choice(topic)
                    + rng.choice(["", rng.choice(topic)]) + rng.choice(_CLOSERS))

        name = f"intent_{number:03d}"
        specs.append(IntentSpec(name=name, examples=[phrase() for _ in range(examples)],
                                reply=f"回复 {number}"))
        held_out.extend((name, phrase()) for _ in range(3))
    rng.shuffle(held_out)
    return specs, held_out


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return (statistics.median(ordered) * 1000.0,
            ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intents", type=int, default=200)
    parser.add_argument("--examples", type=int, default=25)
    parser.add_argument("--messages", type=int, default=2000, help="messages timed per matcher")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    specs, held_out = synthetic_intents(args.intents, args.examples, args.seed)
    messages = [text for _, text in held_out]
    while len(messages) < args.messages:
        messages += messages
    messages = messages[:args.messages]
    print(f"{args.intents} intents × {args.examples} examples, {len(messages)} messages",
          file=sys.stderr)

    started = time.perf_counter()
    engine = IntentEngine.build(specs, [], NluSettings())
    build_s = time.perf_counter() - started
    for text in messages[:50]:  # warm-up
        engine.match(text)
    timings = []
    for text in messages:
        t0 = time.perf_counter()
        engine.match(text)
        timings.append(time.perf_counter() - t0)
    correct = sum(
        1 for name, text in held_out
        if (m := engine.match(text)) is not None and m.intent == name) / len(held_out)
    p50, p99 = percentiles(timings)

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    texts = [e for s in specs for e in s.examples]
    labels = [s.name for s in specs for _ in s.examples]
    started = time.perf_counter()
    baseline = make_pipeline(TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True),
                             LinearSVC()).fit(texts, labels)
    baseline_build_s = time.perf_counter() - started
    for text in messages[:50]:
        baseline.predict([text])
    base_timings = []
    for text in messages:
        t0 = time.perf_counter()
        baseline.predict([text])
        base_timings.append(time.perf_counter() - t0)
    b50, b99 = percentiles(base_timings)

    print(f"engine    build {build_s:6.2f} s   p50 {p50:.3f} ms   p99 {p99:.3f} ms   "
          f"held-out accuracy {correct:.3f}")
    print(f"baseline  build {baseline_build_s:6.2f} s   p50 {b50:.3f} ms   p99 {b99:.3f} ms   "
          "(TF-IDF char 1-3 + LinearSVC, sklearn predict per message)")
    print(f"ratio engine/baseline   p50 {p50 / b50:.2f}   p99 {p99 / b99:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
