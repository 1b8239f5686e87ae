"""Flows as operators write them in TOML (`[[flows]]`), validated at load with line-precise errors.

A flow has triggers (event, intent, stage entered, schedule), steps, exit conditions, a priority
and a re-entry rule. Its version is a hash of its definition: an edit makes a new version, and
customers already in the flow finish the version they entered.
"""

from __future__ import annotations

import hashlib
import json
import string
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flows.conditions import Condition
from flows.durations import parse_duration
from flows.stages import STAGES
from handlers.typed_answers import AnswerKind

EVENTS = ("subscribe", "scan", "order_paid", "order_delivered", "order_refunded", "cart_abandoned",
          "points_changed", "profile_updated", "store_visit", "group_join", "group_leave")
EXIT_ON = (*EVENTS, "reply", "unsubscribe")
# What message texts may use, besides the answers a flow's own questions save.
TEXT_VARIABLES = frozenset({"nickname", "points", "points_expiring", "points_expiring_on", "points_recent",
                            "stage", "source", "order.id", "order.amount", "flow"})
# Text variables that show the customer's own data (a message using one is personal).
PERSONAL_VARIABLES = frozenset({"points", "points_expiring", "points_expiring_on", "points_recent", "stage",
                                "order.id", "order.amount"})
# What conditions may test, besides saved answers.
CONDITION_NAMES = frozenset({"stage", "source", "tags", "points", "orders_count", "lifetime_spend",
                             "subscribed", "opted_out", "event"})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Article(Strict):
    title: str = Field(min_length=1, max_length=64)
    description: str = ""
    url: str = Field(min_length=1)
    picurl: str = ""


class Template(Strict):
    """A template message: service notices only (WeChat forbids marketing in them)."""

    template_id: str = Field(min_length=1)
    data: dict[str, str]
    url: str = ""

    @field_validator("data")
    @classmethod
    def _keyword_rules(cls, data: dict[str, str]) -> dict[str, str]:
        for key, value in data.items():
            if key in ("first", "remark"):
                raise ValueError(f"template field {key!r} no longer exists (removed by WeChat in 2023)")
            if "\n" in value or len(value) > 20:
                raise ValueError(f"template value {key!r} must be at most 20 characters on one line")
        return data


class Trigger(Strict):
    event: str | None = None
    intent: str | None = None
    stage: str | None = None
    schedule: str | None = None  # crontab, e.g. "0 10 * * *" (in the service's timezone)
    when: str | None = None  # condition on the customer, e.g. source == "store_qr"

    @model_validator(mode="after")
    def _exactly_one(self) -> Trigger:
        given = [k for k in ("event", "intent", "stage", "schedule") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("a trigger needs exactly one of event, intent, stage or schedule")
        if self.event and self.event not in EVENTS:
            raise ValueError(f"unknown event {self.event!r}; one of {', '.join(EVENTS)}")
        if self.stage and self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; one of {', '.join(STAGES)}")
        if self.schedule:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.schedule)
            except ValueError as error:
                raise ValueError(f"schedule {self.schedule!r} is not a crontab: {error}") from None
        return self


class Step(Strict):
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    type: Literal["send", "wait", "ask", "branch", "set_tag", "remove_tag", "set_attribute", "add_points",
                  "set_stage", "handoff", "goto", "end"]
    # send / ask
    text: str | None = None
    news: list[Article] | None = None
    image: str | None = None
    template: Template | None = None
    kind: Literal["service", "marketing"] | None = None
    priority: int | None = None
    defer_when_capped: bool = False
    # wait
    duration: str | None = None
    # ask
    answer: AnswerKind | None = None
    options: list[str] = []
    reprompt: str | None = None
    max_attempts: int = Field(2, ge=1, le=5)
    timeout: str | None = None
    save_as: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]{0,31}$")
    on_timeout: str | None = None  # a step id, or "end"
    # branch
    when: str | None = None
    then: str | None = None
    else_: str | None = Field(None, alias="else")
    # set_tag / set_attribute / add_points / set_stage / handoff / goto
    tag: str | None = None
    key: str | None = None
    value: str | int | float | bool | None = None
    points: int | None = None
    reason: str | None = None
    stage: str | None = None
    to: str | None = None

    @model_validator(mode="after")
    def _fields_for_type(self) -> Step:
        needs = {
            "wait": ["duration"], "ask": ["text", "answer"], "branch": ["when", "then"],
            "set_tag": ["tag"], "remove_tag": ["tag"], "set_attribute": ["key"],
            "add_points": ["points"], "set_stage": ["stage"], "goto": ["to"],
        }
        missing = [name for name in needs.get(self.type, []) if getattr(self, name) in (None, "")]
        if missing:
            raise ValueError(f"a {self.type} step needs {', '.join(missing)}")
        if self.type == "send" and not (self.text or self.news or self.image or self.template):
            raise ValueError("a send step needs text, news, image or template")
        if self.type == "ask" and self.answer == "choice" and not self.options:
            raise ValueError("a choice question needs options")
        for name in ("duration", "timeout"):
            if getattr(self, name) is not None:
                parse_duration(getattr(self, name))
        if self.stage is not None and self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; one of {', '.join(STAGES)}")
        return self

    @property
    def wait(self) -> timedelta:
        return parse_duration(self.duration or "0s")


class Flow(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    description: str = ""
    kind: Literal["service", "marketing"] = "marketing"
    priority: int = 0
    # Exclusive flows run one at a time per customer; the higher priority one wins.
    exclusive: bool | None = None
    reentry: str = "once"  # "once", "always", or "every 30d" (once per period)
    triggers: list[Trigger] = Field(min_length=1)
    exit_on: list[str] = []
    steps: list[Step] = Field(min_length=1)
    # Whether its messages carry the customer's own data, so that in a group they go privately.
    # None: decided from the steps (a question, or a text with {points}, {order.id} …).
    personal: bool | None = None

    @field_validator("reentry")
    @classmethod
    def _reentry(cls, rule: str) -> str:
        if rule in ("once", "always"):
            return rule
        if rule.startswith("every "):
            parse_duration(rule.removeprefix("every "))
            return rule
        raise ValueError(f"reentry must be \"once\", \"always\" or \"every <duration>\" (e.g. \"every 30d\"), "
                         f"not {rule!r}")

    @field_validator("exit_on")
    @classmethod
    def _exit_on(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in EXIT_ON and not name.startswith("stage:"):
                raise ValueError(f"exit_on {name!r} is not one of {', '.join(EXIT_ON)} or stage:<stage>")
            if name.startswith("stage:") and name.removeprefix("stage:") not in STAGES:
                raise ValueError(f"exit_on {name!r} names an unknown stage")
        return names

    @property
    def is_exclusive(self) -> bool:
        return self.kind == "marketing" if self.exclusive is None else self.exclusive

    @property
    def reentry_period(self) -> timedelta | None:
        return parse_duration(self.reentry.removeprefix("every ")) if self.reentry.startswith("every ") else None

    def step_ids(self) -> list[str]:
        return [step.id or f"step{index + 1}" for index, step in enumerate(self.steps)]

    @property
    def is_personal(self) -> bool:
        """Declared, or: it asks the customer something, or a text shows their own data."""
        if self.personal is not None:
            return self.personal
        texts = [text for step in self.steps for text in (step.text, step.reprompt) if text]
        return any(step.type == "ask" for step in self.steps) or any(
            name in PERSONAL_VARIABLES for text in texts for name in _variables(text))

    def version(self) -> str:
        # Where its answers go in groups is not part of what a customer walks through.
        definition = self.model_dump(mode="json", by_alias=True, exclude={"personal"})
        canonical = json.dumps(definition, sort_keys=True, ensure_ascii=False)
        return hashlib.sha1(canonical.encode()).hexdigest()[:16]


Located = tuple[tuple[str | int, ...], str]


def flow_problems(flows: list[Flow], intents: list[Any]) -> list[Located]:
    """Checks across steps, flows and intents, each with the config location it concerns."""
    problems: list[Located] = []
    seen: set[str] = set()
    for f, flow in enumerate(flows):
        if flow.name in seen:
            problems.append((("flows", f, "name"), f"flow name {flow.name!r} is used twice"))
        seen.add(flow.name)
        ids = flow.step_ids()
        saved = {s.save_as for s in flow.steps if s.save_as}
        for index, step in enumerate(flow.steps):
            at = ("flows", f, "steps", index)
            if ids.count(ids[index]) > 1:
                problems.append(((*at, "id"), f"step id {ids[index]!r} is used twice in flow {flow.name!r}"))
            for field, target in (("then", step.then), ("else", step.else_), ("to", step.to),
                                  ("on_timeout", step.on_timeout)):
                if target is not None and target != "end" and target not in ids:
                    problems.append(((*at, field), f"goes to step {target!r}, which flow {flow.name!r} does "
                                                   f"not have (steps: {', '.join(ids)})"))
            for field, text in (("text", step.text), ("reprompt", step.reprompt)):
                if text:
                    problem = _variable_problem(text, TEXT_VARIABLES | saved)
                    if problem:
                        problems.append(((*at, field), problem))
            if step.when:
                try:
                    Condition(step.when, CONDITION_NAMES | saved)
                except ValueError as error:
                    problems.append(((*at, "when"), str(error)))
        for t, trigger in enumerate(flow.triggers):
            if trigger.when:
                try:
                    Condition(trigger.when, CONDITION_NAMES)
                except ValueError as error:
                    problems.append((("flows", f, "triggers", t, "when"), str(error)))
    names = {flow.name for flow in flows}
    known_intents = {intent.name for intent in intents}
    for f, flow in enumerate(flows):
        for t, trigger in enumerate(flow.triggers):
            if trigger.intent and trigger.intent not in known_intents:
                problems.append((("flows", f, "triggers", t, "intent"),
                                 f"intent {trigger.intent!r} is not defined in [[intents]]"))
    for i, intent in enumerate(intents):
        target = getattr(intent, "flow", None)
        if target and target not in names:
            problems.append((("intents", i, "flow"), f"flow {target!r} is not defined in [[flows]]"))
    return problems


def _variables(text: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name]
    except ValueError:
        return []


def _variable_problem(text: str, known: frozenset[str] | set[str]) -> str | None:
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as error:
        return f"text has a stray brace: {error}"
    for name in fields:
        if name not in known:
            return (f"{{{name}}} does not exist; available: "
                    f"{', '.join('{' + k + '}' for k in sorted(known))}")
    return None
