"""Build the router from settings: operator rules first, then the intent engine."""

from __future__ import annotations

from bot.config.settings import Settings
from handlers.matching import Matcher
from handlers.nlu.engine import build_matcher
from handlers.router import ReplyTexts, Router
from handlers.rules import Rule, RuleKind, RuleMatcher
from handlers.text import load_tables


def build_router(settings: Settings) -> Router:
    """CPU-heavy (segmentation, classifier training): call it in an executor at start-up."""
    load_tables()  # typed answers fold Traditional script too, with or without intents
    matchers: list[Matcher] = []
    if settings.rules:
        matchers.append(RuleMatcher([
            Rule(name=r.name, kind=RuleKind(r.match), patterns=tuple(r.patterns), priority=r.priority,
                 reply=r.reply)
            for r in settings.rules
        ]))
    if settings.intents or settings.faq:
        matchers.append(build_matcher(settings.intents, settings.faq, settings.nlu))
    texts = settings.replies
    return Router(matchers, ReplyTexts(fallback=texts.fallback, welcome=texts.welcome, media=texts.media,
                                       welcome_by_source=texts.welcome_by_source))
