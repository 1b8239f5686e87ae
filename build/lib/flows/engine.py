"""Runs operator-written flows: starts them on triggers, walks their steps, resumes them on time.

The engine is three things to the rest of the service:
- a pipeline middleware: answers to a flow's question are taken before routing, a decision to
  start a flow (or a follow's flows) is carried out here, intents start the flows they trigger,
  and a reply ends flows that stop when the customer writes;
- the lifecycle's reactions: business events and stage changes start and end flows;
- a sweeper: runs whose wait or question timed out continue, one transaction per run, under
  the customer's row lock, so several processes never advance the same run twice.

Messages a flow sends while answering a customer's message ride on that reply; messages sent
later are touches, and the outbox decides whether and when they may go out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage import flow_runs as store
from flows.conditions import Condition
from flows.definitions import Flow, Step
from flows.durations import parse_duration
from flows.lifecycle_settings import PointsSettings
from flows.turn import Next, Turn
from flows.variables import FlowVariables
from handlers.messages import EventKind, InboundKind, Reply
from handlers.router import Decision, StartFlow, render
from handlers.typed_answers import NOT_AN_ANSWER, parse_answer
from storage import schedules
from storage.conversations import log_event
from storage.models import Customer, FlowRun, SurveyResponse

log = logging.getLogger(__name__)

MAX_STEPS_PER_ADVANCE = 100  # a goto loop without a wait must not spin forever
# A scheduled start missed by more than this (the service was stopped at its time) is skipped, not
# made up: [sweepers] schedule_misfire_grace_minutes sets it for the service.
SCHEDULE_MISFIRE_GRACE = timedelta(hours=1)
FLOW_SWEEP_LATENESS_SECONDS = 120  # later than a couple of sweeps: worth a line in the log
DEFAULT_REPROMPTS = {
    "rating": "请回复 1 到 5 的数字，5 分表示非常满意。",
    "nps": "请回复 0 到 10 的数字，10 分表示非常愿意推荐。",
    "yes_no": "请回复“是”或“否”。",
    "choice": "请从以下选项中回复一个：{options}",
    "phone": "请回复 11 位手机号码。",
    "order_number": "请回复订单号，例如 A1001。",
    "text": "请直接回复文字内容。",
}


@dataclass
class _Context:
    """Where one advance sends messages: into the reply of the customer's message, or as touches."""

    session: AsyncSession
    customer: Customer
    now: datetime
    turn: Turn | None = None


class FlowEngine:
    def __init__(self, flows: Sequence[Flow], sessions: async_sessionmaker[AsyncSession],
                 points: PointsSettings | None = None, variables: FlowVariables | None = None):
        self._points = points or PointsSettings()
        self._flows = {flow.name: flow for flow in flows}
        self._versions = {flow.name: flow.version() for flow in flows}
        self._sessions = sessions
        self._variables = variables or FlowVariables()
        self._old_versions: dict[tuple[str, str], Flow] = {}
        self._conditions: dict[str, Condition] = {}
        self._triggered: dict[tuple[str | None, str | None, str | None], list[Flow]] = {}

    # --- start-up ---------------------------------------------------------------------------

    async def save_versions(self, now: datetime) -> None:
        """Store every current definition, so runs can always finish the version they entered."""
        async with self._sessions() as session, session.begin():
            await store.save_versions(session, [
                (name, self._versions[name], flow.model_dump(mode="json", by_alias=True))
                for name, flow in self._flows.items()
            ], now)

    # --- pipeline middleware ----------------------------------------------------------------

    async def __call__(self, turn: Turn, next: Next) -> None:
        """Answers to a flow's question are taken instead of routing; after routing, the intent
        starts the flows it triggers and an unfollow ends the flows that stop on it."""
        if await self._take_answers(turn):
            return
        await next(turn)
        context = _Context(turn.session, turn.customer, turn.now, turn)
        decision = turn.decision
        if decision is not None and decision.match is not None and not isinstance(decision, StartFlow):
            for flow in self._flows_triggered(intent=decision.match.intent):
                await self._start(context, flow.name, f"intent:{decision.match.intent}", {})
        if turn.inbound.event is EventKind.UNSUBSCRIBE:
            for run in await store.open_runs(turn.session, turn.customer.id):
                definition = await self._definition(turn.session, run)
                if definition is not None and "unsubscribe" in definition.exit_on:
                    await self._exit(context, run, "customer unsubscribed")

    async def act(self, turn: Turn, decision: Decision) -> bool:
        """Start the flow a decision names; on a follow or scan, the flows it triggers (their
        own welcome instead of the default one)."""
        context = _Context(turn.session, turn.customer, turn.now, turn)
        if isinstance(decision, StartFlow):
            turn.replies.extend(decision.replies)
            await self._start(context, decision.flow, f"intent:{decision.match.intent}", {})
            return True
        event = turn.inbound.event
        if turn.inbound.kind is not InboundKind.EVENT or event not in (EventKind.SUBSCRIBE, EventKind.SCAN):
            return False
        name = "subscribe" if event is EventKind.SUBSCRIBE else "scan"
        replies_before = len(turn.replies)
        started = False
        for flow in self._flows_triggered(event=name):
            started = await self._start(context, flow.name, f"event:{name}",
                                        {"source": turn.inbound.event_key or ""}) or started
        if started and len(turn.replies) > replies_before:
            return True
        turn.replies[replies_before:replies_before] = decision.replies  # the default welcome, first
        return True

    async def _take_answers(self, turn: Turn) -> bool:
        """Whether an open run's question took the customer's words as its answer."""
        # Nothing of the flows is pending yet, only the turn's own changes to the customer and
        # conversation: they are written with the turn's messages, not before this read.
        with turn.session.no_autoflush:
            runs = await store.open_runs(turn.session, turn.customer.id)
        if not runs:
            return False
        context = _Context(turn.session, turn.customer, turn.now, turn)
        words = turn.inbound.kind in (InboundKind.TEXT, InboundKind.VOICE) and turn.inbound.text.strip()
        for run in runs:
            flow = await self._definition(turn.session, run)
            if words and run.status == "asking" and flow is not None:
                if await self._take_answer(context, run, flow, turn.inbound.text):
                    return True
            elif words and flow is not None and "reply" in flow.exit_on:
                await self._exit(context, run, "customer replied")
        return False

    # --- reactions (lifecycle and business events) -------------------------------------------

    async def on_event(self, session: AsyncSession, customer: Customer, event_type: str,
                       data: dict[str, Any], now: datetime) -> None:
        context = _Context(session, customer, now)
        for run in await store.open_runs(session, customer.id):
            flow = await self._definition(session, run)
            if flow is not None and event_type in flow.exit_on:
                await self._exit(context, run, f"event {event_type}")
        variables = {"event": event_type, **_event_variables(event_type, data)}
        for flow in self._flows_triggered(event=event_type):
            await self._start(context, flow.name, f"event:{event_type}", variables)

    async def on_stage_change(self, session: AsyncSession, customer: Customer, from_stage: str | None,
                              to_stage: str, now: datetime) -> None:
        context = _Context(session, customer, now)
        for run in await store.open_runs(session, customer.id):
            flow = await self._definition(session, run)
            if flow is not None and f"stage:{to_stage}" in flow.exit_on:
                await self._exit(context, run, f"stage {to_stage}")
        for flow in self._flows_triggered(stage=to_stage):
            await self._start(context, flow.name, f"stage:{to_stage}", {"from_stage": from_stage or ""})

    # --- sweeper ------------------------------------------------------------------------------

    async def advance_due(self, now: datetime, batch: int = 500) -> int:
        """Continue runs whose wait is over or whose question timed out; returns how many."""
        async with self._sessions() as session:
            ids = await store.due_run_ids(session, now, batch)
        advanced = 0
        for run_id in ids:
            async with self._sessions() as session, session.begin():
                locked = await store.lock_run(session, run_id)
                if locked is None:
                    continue
                run, customer = locked
                # Re-checked under the lock: another process, or the customer, may have moved it.
                if run.status not in ("waiting", "asking") or run.wake_at is None or run.wake_at > now:
                    continue
                flow = await self._definition(session, run)
                context = _Context(session, customer, now)
                if flow is None:
                    await self._exit(context, run, "flow definition is gone")
                    continue
                ids_ = flow.step_ids()
                index = ids_.index(run.step) if run.step in ids_ else len(ids_)
                if run.status == "waiting":
                    await self._advance(context, run, flow, index + 1)
                else:
                    step = flow.steps[index]
                    log_event(session, customer.id, "flow_question_timed_out", now,
                              {"flow": run.flow, "step": run.step})
                    await self._goto(context, run, flow, step.on_timeout or "end")
                advanced += 1
        return advanced

    async def run_schedules(self, now: datetime, batch: int = 500,
                            misfire_grace: timedelta = SCHEDULE_MISFIRE_GRACE) -> int:
        """Start flows whose crontab fired since it last fired; returns how many runs started.

        When each trigger last fired is stored, so a time that fell while the service was stopped
        fires once after the restart (once, however many times it was missed), unless it is more
        than `misfire_grace` late: then it is skipped and logged. Of several processes, only the
        one whose conditional UPDATE moves the mark fires it.
        """
        started = 0
        for flow in self._flows.values():
            for index, trigger in enumerate(flow.triggers):
                if not trigger.schedule:
                    continue
                key, crontab = f"{flow.name}:{index}", trigger.schedule
                last = await schedules.schedule_mark(self._sessions, key, crontab, now)
                fired = _latest_firing(crontab, max(last, now - misfire_grace), now)
                if fired is not None:
                    if await schedules.claim_firing(self._sessions, key, crontab, fired, now):
                        if fired < now - timedelta(seconds=FLOW_SWEEP_LATENESS_SECONDS):
                            log.info("flow %s: scheduled start %s fires late, at %s", flow.name, fired, now)
                        started += await self._start_for_everyone(flow, f"schedule:{crontab}", now, batch)
                    continue
                missed = _next_firing(crontab, last)
                if missed is not None and missed <= now and await schedules.claim_firing(
                        self._sessions, key, crontab, now, now):
                    log.warning("flow %s: scheduled start %s was missed by more than %s (service stopped?): "
                                "skipped", flow.name, missed, misfire_grace)
        return started

    async def _start_for_everyone(self, flow: Flow, trigger: str, now: datetime, batch: int) -> int:
        started, after = 0, 0
        while True:
            async with self._sessions() as session:
                ids = list((await session.execute(
                    select(Customer.id).where(Customer.id > after).order_by(Customer.id).limit(batch)
                )).scalars())
            if not ids:
                return started
            for customer_id in ids:
                async with self._sessions() as session, session.begin():
                    customer = (await session.execute(
                        select(Customer).where(Customer.id == customer_id).with_for_update())).scalar_one()
                    started += await self._start(_Context(session, customer, now), flow.name, trigger, {})
            after = ids[-1]

    # --- internals ----------------------------------------------------------------------------

    def _flows_triggered(self, *, intent: str | None = None, event: str | None = None,
                         stage: str | None = None) -> list[Flow]:
        # Asked for every message with the intent it matched: the answer is looked up once.
        key = (intent, event, stage)
        found = self._triggered.get(key)
        if found is None:
            found = sorted((
                flow for flow in self._flows.values()
                if any((intent and t.intent == intent) or (event and t.event == event)
                       or (stage and t.stage == stage) for t in flow.triggers)
            ), key=lambda flow: -flow.priority)
            self._triggered[key] = found
        return found

    def _condition(self, source: str) -> Condition:
        """Parsed once: the config loader already checked its names."""
        if source not in self._conditions:
            self._conditions[source] = Condition(source)
        return self._conditions[source]

    async def _definition(self, session: AsyncSession, run: FlowRun) -> Flow | None:
        current = self._flows.get(run.flow)
        if current is not None and self._versions[run.flow] == run.version:
            return current
        key = (run.flow, run.version)
        if key not in self._old_versions:
            stored = await store.load_version(session, run.flow, run.version)
            if stored is None:
                return None
            self._old_versions[key] = Flow.model_validate(stored)
        return self._old_versions[key]

    async def _start(self, context: _Context, name: str, trigger: str, variables: dict[str, Any]) -> bool:
        flow = self._flows.get(name)
        if flow is None:
            log.warning("flow %s is not defined; trigger %s ignored", name, trigger)
            return False
        session, customer, now = context.session, context.customer, context.now
        values = await self._variables.condition_values(session, customer, variables)
        matching = [t for t in flow.triggers
                    if trigger.split(":", 1)[1] in (t.intent, t.event, t.stage, t.schedule)]
        if matching and all(t.when and not self._condition(t.when).evaluate(values) for t in matching):
            return False
        previous = await store.last_run(session, customer.id, name)
        if previous is not None:
            if flow.reentry == "once":
                return False
            period = flow.reentry_period
            if period is not None and previous.started_at > now - period:
                return False
        open_runs = await store.open_runs(session, customer.id)
        for run in open_runs:
            if run.flow == name:
                if flow.reentry != "always":
                    return False
                await self._exit(context, run, "started again")
        if flow.is_exclusive:
            for run in open_runs:
                other = self._flows.get(run.flow)
                if run.flow == name or other is None or not other.is_exclusive:
                    continue
                if other.priority >= flow.priority:
                    log_event(session, customer.id, "flow_not_started", now,
                              {"flow": name, "trigger": trigger, "busy_with": run.flow})
                    return False
                await self._exit(context, run, f"preempted by {name}")
        run = FlowRun(customer_id=customer.id, flow=name, version=self._versions[name], status="active",
                      step=flow.step_ids()[0], attempts=0, variables=_jsonable(variables), trigger=trigger,
                      started_at=now, updated_at=now)
        store.add_run(session, run)
        await session.flush()
        log_event(session, customer.id, "flow_started", now,
                  {"flow": name, "version": run.version, "trigger": trigger, "run": run.id})
        await self._advance(context, run, flow, 0)
        return True

    async def _advance(self, context: _Context, run: FlowRun, flow: Flow, index: int) -> None:
        ids = flow.step_ids()
        session, customer, now = context.session, context.customer, context.now
        run.status, run.wake_at, run.updated_at = "active", None, now
        for _ in range(MAX_STEPS_PER_ADVANCE):
            if index >= len(flow.steps):
                await self._finish(context, run, "completed", "last step done")
                return
            step, step_id = flow.steps[index], ids[index]
            run.step = step_id
            if step.type == "send":
                await self._send(context, run, flow, step, step_id)
            elif step.type == "wait":
                run.status, run.wake_at = "waiting", now + step.wait
                return
            elif step.type == "ask":
                run.attempts = 0
                await self._send(context, run, flow, step, step_id)
                run.status = "asking"
                run.wake_at = now + parse_duration(step.timeout) if step.timeout else None
                return
            elif step.type == "branch":
                values = await self._variables.condition_values(session, customer, run.variables)
                target = step.then if self._condition(step.when or "").evaluate(values) else step.else_
                if target is not None:
                    if target == "end":
                        await self._finish(context, run, "completed", f"branch at {step_id}")
                        return
                    index = ids.index(target)
                    continue
            elif step.type == "goto":
                if step.to == "end":
                    await self._finish(context, run, "completed", f"goto end at {step_id}")
                    return
                index = ids.index(step.to or "")
                continue
            elif step.type == "end":
                await self._finish(context, run, "completed", step.reason or "end step")
                return
            else:
                await self._apply(context, run, flow, step)
            index += 1
        await self._finish(context, run, "exited", "too many steps without a wait (goto loop?)")

    async def _goto(self, context: _Context, run: FlowRun, flow: Flow, target: str) -> None:
        if target == "end":
            await self._finish(context, run, "completed", f"no answer to {run.step}")
        else:
            await self._advance(context, run, flow, flow.step_ids().index(target))

    async def _take_answer(self, context: _Context, run: FlowRun, flow: Flow, text: str) -> bool:
        """Whether the text answered (or was re-asked) the run's question."""
        turn = context.turn
        assert turn is not None
        ids = flow.step_ids()
        if run.step not in ids:
            return False
        index = ids.index(run.step)
        step = flow.steps[index]
        value = parse_answer(step.answer or "text", text, step.options)
        if value is NOT_AN_ANSWER:
            run.attempts += 1
            run.updated_at = context.now
            if run.attempts >= step.max_attempts:
                log_event(context.session, context.customer.id, "flow_question_unanswered", context.now,
                          {"flow": run.flow, "step": run.step})
                await self._goto(context, run, flow, step.on_timeout or "end")
                return False  # not handled: the router answers what the customer actually said
            template = step.reprompt or DEFAULT_REPROMPTS[step.answer or "text"]
            variables = await self._variables.text_values(context.session, context.customer, run, template,
                                                          context.now)
            variables["options"] = "、".join(step.options)
            turn.replies.append(Reply(render(template, variables), intent=f"flow:{run.flow}", source="flow"))
            return True
        if step.save_as:
            run.variables = {**run.variables, step.save_as: value}
            context.session.add(SurveyResponse(
                customer_id=context.customer.id, flow_run_id=run.id, question=step.save_as,
                score=value if isinstance(value, int) and not isinstance(value, bool) else None,
                text=None if isinstance(value, int) and not isinstance(value, bool) else str(value),
                answered_at=context.now))
        await self._advance(context, run, flow, index + 1)
        return True

    async def _send(self, context: _Context, run: FlowRun, flow: Flow, step: Step, step_id: str) -> None:
        variables = await self._variables.text_values(context.session, context.customer, run, step.text or "",
                                                      context.now)
        text = render(step.text, variables) if step.text else None
        if context.turn is not None and text is not None and not (step.news or step.image):
            context.turn.replies.append(Reply(text, intent=f"flow:{run.flow}", source="flow"))
            return
        from storage.touches import enqueue_touch

        body: dict[str, Any]
        if step.news:
            body = {"type": "news", "articles": [a.model_dump() for a in step.news]}
        elif step.image:
            body = {"type": "image", "media_id": step.image}
        elif text is not None:
            body = {"type": "text", "text": text}
        else:
            body = {"type": "text", "text": ""}
        kind = step.kind or flow.kind
        template = step.template.model_dump() if step.template and kind == "service" else None
        if not body.get("text", True) and template is None:
            return
        await enqueue_touch(
            context.session, customer_id=context.customer.id, kind=kind, body=body, due_at=context.now,
            idempotency_key=f"flow:{run.id}:{step_id}:{run.attempts}", template=template,
            priority=step.priority if step.priority is not None else flow.priority,
            defer_when_capped=step.defer_when_capped, flow_run_id=run.id, now=context.now)

    async def _apply(self, context: _Context, run: FlowRun, flow: Flow, step: Step) -> None:
        session, customer, now = context.session, context.customer, context.now
        if step.type == "set_tag" and step.tag not in customer.tags:
            customer.tags = [*customer.tags, step.tag or ""]
        elif step.type == "remove_tag":
            customer.tags = [tag for tag in customer.tags if tag != step.tag]
        elif step.type == "set_attribute":
            customer.attributes = {**customer.attributes, step.key or "": step.value}
        elif step.type == "add_points":
            from flows.points import adjust

            await adjust(session, customer, step.points or 0, step.reason or f"flow {flow.name}", now,
                         self._points, source_event_id=f"flow:{run.id}:{run.step}")
        elif step.type == "set_stage":
            from flows.lifecycle import move_stage

            if customer.stage != step.stage:
                await move_stage(session, customer, step.stage or "", step.reason or f"flow {flow.name}", now,
                                 self)
        elif step.type == "handoff":
            from flows.handoff import escalate_customer

            await escalate_customer(session, customer, step.reason or f"flow {flow.name}",
                                    f"flow:{flow.name}", now)
            if step.text:
                await self._send(context, run, flow, step, run.step)

    async def _exit(self, context: _Context, run: FlowRun, reason: str) -> None:
        from storage.touches import cancel_touches

        await cancel_touches(context.session, customer_id=run.customer_id, flow_run_id=run.id,
                             reason=f"flow {run.flow} ended: {reason}")
        await self._finish(context, run, "exited", reason)

    async def _finish(self, context: _Context, run: FlowRun, status: str, reason: str) -> None:
        run.status, run.end_reason, run.wake_at = status, reason, None
        run.ended_at = run.updated_at = context.now
        log_event(context.session, run.customer_id, f"flow_{status}", context.now,
                  {"flow": run.flow, "run": run.id, "reason": reason})


def _next_firing(crontab: str, after: datetime) -> datetime | None:
    trigger = CronTrigger.from_crontab(crontab, timezone=UTC)
    moment: datetime | None = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    return moment


def _latest_firing(crontab: str, after: datetime, until: datetime) -> datetime | None:
    """The last time a crontab fired in (after, until], in the service's timezone (UTC)."""
    trigger = CronTrigger.from_crontab(crontab, timezone=UTC)
    latest = None
    moment = _next_firing(crontab, after)
    while moment is not None and moment <= until:
        latest = moment
        moment = trigger.get_next_fire_time(moment, moment + timedelta(seconds=1))
    return latest


def _event_variables(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    if event_type.startswith("order_") and "order_id" in data:
        return {"order": {"id": str(data["order_id"]), "amount": str(data.get("amount", ""))}}
    return {}


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (str, int, float, bool, dict, list, type(None))) else str(v)
            for k, v in values.items()}
