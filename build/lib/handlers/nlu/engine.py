"""The intent engine: normalise, then rules, then the classifier, then the FAQ — or admit it
does not know."""

from __future__ import annotations

from collections.abc import Sequence

from handlers.matching import Action, Match
from handlers.nlu.classifier import IntentClassifier
from handlers.nlu.faq import FaqIndex
from handlers.nlu.normalize import Normalizer
from handlers.nlu.segment import Segmenter
from handlers.nlu.settings import FaqEntry, IntentSpec, NluSettings
from handlers.nlu.topics import load_word_topics
from handlers.nlu.word_vectors import load_word_vectors
from handlers.rules import Rule, RuleKind, RuleSet

# The classifier's own label for "belongs to no intent", trained from `nlu.out_of_scope`
# (evaluation files use the same word).
NONE_LABEL = "none"
FAQ_PREFIX = "faq:"
# The classifier and FAQ read at most this much of a message: intent shows in the first
# sentences, and a pasted essay must not cost milliseconds on the message path.
MAX_SCORED_CHARS = 300


class IntentEngine:
    """Implements `handlers.matching.Matcher`. Build once at start-up (in an executor: it loads
    jieba's dictionary and fits the classifier), then call `match` per message."""

    def __init__(self, intents: Sequence[IntentSpec], nlu: NluSettings, normalizer: Normalizer,
                 segmenter: Segmenter, rules: RuleSet, classifier: IntentClassifier | None,
                 examples: FaqIndex | None, faq: FaqIndex, faq_entries: Sequence[FaqEntry]) -> None:
        self._intents = {intent.name: intent for intent in intents}
        self._faq_entries = {FAQ_PREFIX + entry.name: entry for entry in faq_entries}
        self._nlu = nlu
        self._normalize = normalizer
        self._segmenter = segmenter
        self._rules = rules
        self._classifier = classifier
        self._examples = examples
        self._faq = faq

    @classmethod
    def build(cls, intents: Sequence[IntentSpec], faq: Sequence[FaqEntry],
              nlu: NluSettings) -> IntentEngine:
        """Synchronous and CPU-heavy (about a second for a few thousand examples, plus reading
        the word topics and vectors on a process's first build)."""
        normalizer = Normalizer(nlu.synonyms)
        segmenter = Segmenter(normalizer(word) for word in nlu.dictionary)
        rules = RuleSet([Rule(intent.name, kind, tuple(patterns), intent.priority)
                         for intent in intents
                         for kind, patterns in ((RuleKind.EXACT, intent.exact),
                                                (RuleKind.KEYWORD, intent.keywords),
                                                (RuleKind.REGEX, intent.regex)) if patterns],
                        normalizer)

        texts: list[str] = []
        labels: list[str] = []
        for intent in intents:
            for example in intent.examples:
                texts.append(normalizer(example))
                labels.append(intent.name)
        # FAQ questions are examples too: the classifier then weighs "怎么开发票" against the
        # intents instead of forcing it into the intent whose examples share "怎么".
        for entry in faq:
            for question in entry.questions:
                texts.append(normalizer(question))
                labels.append(FAQ_PREFIX + entry.name)
        for phrase in nlu.out_of_scope:
            texts.append(normalizer(phrase))
            labels.append(NONE_LABEL)
        kept = [(t, label) for t, label in zip(texts, labels) if t]
        classifier: IntentClassifier | None = None
        examples: FaqIndex | None = None
        if len({label for _, label in kept}) >= 2:
            classifier = IntentClassifier.build([t for t, _ in kept], [lb for _, lb in kept],
                                                segmenter.search_words, segmenter.tags,
                                                load_word_topics(), load_word_vectors())
        only = next((i for i in intents if i.examples), None)
        if classifier is None and only is not None:
            # One intent alone cannot train a classifier; its examples are matched by similarity.
            examples = FaqIndex([FaqEntry(name=only.name, questions=list(only.examples), answer="-")],
                                normalizer, segmenter.search_words)
        faq_index = FaqIndex(faq, normalizer, segmenter.search_words)
        return cls(intents, nlu, normalizer, segmenter, rules, classifier, examples, faq_index, faq)

    def match(self, text: str) -> Match | None:
        normalized = self._normalize(text)
        if not normalized:
            return None
        hit = self._rules.match(normalized) if self._rules else None
        if hit is not None:
            return self._intent_match(hit.rule.name, "rule", 1.0)
        entry = self._faq.exact(normalized)
        if entry is not None:
            return _faq_match(entry, 1.0)
        normalized = normalized[:MAX_SCORED_CHARS]
        found = self._classify(normalized)
        if found is not None:
            return found
        faq_hit = self._faq.search(normalized)
        if faq_hit is not None and faq_hit.similarity >= self._nlu.faq_threshold:
            return _faq_match(faq_hit.entry, faq_hit.similarity)
        return None

    def _classify(self, normalized: str) -> Match | None:
        if self._classifier is not None:
            scores = self._classifier.score(normalized)
            if scores.known_features == 0:
                return None  # nothing in the message was ever seen in an example
            label, top = scores.label, scores.confidence
            if label == NONE_LABEL or top < self._nlu.threshold:
                return None
            if self._nlu.margin and top - scores.runner_up < self._nlu.margin:
                return None  # two intents nearly tied: asking again beats guessing
            return self._intent_match(label, "classifier", top)
        if self._examples is not None:
            hit = self._examples.search(normalized)
            if hit is not None and hit.similarity >= self._nlu.faq_threshold:
                return self._intent_match(hit.entry.name, "classifier", hit.similarity)
        return None

    def _intent_match(self, name: str, source: str, confidence: float) -> Match:
        entry = self._faq_entries.get(name)
        if entry is not None:
            return _faq_match(entry, confidence)
        intent = self._intents[name]
        return Match(intent=name, source=source, confidence=round(confidence, 4),
                     reply=intent.reply, action=intent.action, flow=intent.flow)


def _faq_match(entry: FaqEntry, similarity: float) -> Match:
    return Match(intent=FAQ_PREFIX + entry.name, source="faq", confidence=round(similarity, 4),
                 reply=entry.answer, action=Action.REPLY)


def build_matcher(intents: Sequence[IntentSpec], faq: Sequence[FaqEntry],
                  nlu: NluSettings) -> IntentEngine:
    """Start-up entry point for the app: run it in an executor."""
    return IntentEngine.build(intents, faq, nlu)
