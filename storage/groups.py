"""Every statement on customer groups: what a batch of group events stores (groups, member
customers, memberships, the group log, the day's figures), the welcome posts, and what the
console reads.

A group member is a customer of the group's channel keyed by the gateway's member id. When they
share a unionid with a customer of an account channel (Official Account, WeCom), that customer is
their record: their turns, points, orders, stage and consent live there (`member_accounts`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, and_, case, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.group_models import ChatGroup, GroupDay, GroupEntry, GroupMembership
from storage.models import Customer, Event
from storage.upsert import insert_ignore

# The channels whose customer is a person's main record, in order of preference.
ACCOUNT_CHANNELS = ("wechat_mp", "wecom_kf", "wecom")
JOINED, LEFT = "joined", "left"
MESSAGE, JOIN, LEAVE = "message", "join", "leave"
WELCOME = "welcome"
CONTACT = "contact"  # a new customer's stage
PENDING, SENDING, SENT, FAILED, PASSIVE = "pending", "sending", "sent", "failed", "passive"


@dataclass(frozen=True, slots=True)
class Account:
    """The customer record a member's activity belongs to."""

    customer_id: int
    channel: str
    external_id: str


@dataclass(frozen=True, slots=True)
class MemberInfo:
    id: str
    name: str | None = None
    unionid: str | None = None


@dataclass(slots=True)
class GroupArrival:
    """A group event to store: a message (`members` holds its sender), a join or a leave."""

    channel: str
    kind: str  # message | join | leave
    event_id: str
    group_id: str  # the platform's group id
    group_name: str | None
    members: list[MemberInfo]
    occurred_at: datetime
    text: str = ""
    addressed: bool = False
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class GroupPost:
    """Something the bot said in a group: an answer or a note (already in the hook's answer)."""

    channel: str
    group_id: str
    kind: str  # answer | note
    member_id: str  # whom it answered
    mention: list[str]
    text: str
    answered: bool  # the first post of an answer: counts one answered message
    occurred_at: datetime


@dataclass(slots=True)
class Applied:
    """What a batch stored, for the callers and for the lifecycle."""

    duplicates: set[tuple[str, str]] = field(default_factory=set)  # (channel, event id)
    accounts: dict[tuple[str, str], Account] = field(default_factory=dict)  # (channel, member id)
    created: list[Customer] = field(default_factory=list)  # new member customers
    joined: list[tuple[int, str]] = field(default_factory=list)  # (record customer id, group id)
    left: list[tuple[int, str]] = field(default_factory=list)
    first_today: list[int] = field(default_factory=list)  # record customer ids: first message of the day
    welcomes: list[tuple[str, int]] = field(default_factory=list)  # (channel, welcome post) started here


@dataclass(slots=True)
class _Group:
    id: int
    channel: str
    external_id: str
    member_count: int
    welcome_post_id: int | None


@dataclass(slots=True)
class _Day:
    members_delta: int = 0
    joins: int = 0
    leaves: int = 0
    messages: int = 0
    speakers: int = 0
    answers: int = 0


def _pairs(first: Any, second: Any, pairs: Iterable[tuple[Any, Any]]) -> ColumnElement[bool]:
    """`(first, second)` is one of `pairs`, as `first = ? AND second IN (…)` per first value: SQLite
    searches a two-column index for that, where a row-value IN would scan the whole table."""
    by_first: dict[Any, list[Any]] = {}
    for a, b in sorted(set(pairs)):
        by_first.setdefault(a, []).append(b)
    return or_(*(and_(first == a, second.in_(bs)) for a, bs in by_first.items()))


async def apply_group_events(session: AsyncSession, arrivals: Sequence[GroupArrival], posts: Sequence[GroupPost],
                             now: datetime, today: date, welcome_due: datetime | None) -> Applied:
    """Store a batch in the caller's transaction: new events (retries are recognised by their id
    and change nothing), the bot's posts, memberships and the day's figures.

    `welcome_due`: when a welcome started by these joins goes out (None: no welcome)."""
    applied = Applied()
    fresh = await _fresh(session, arrivals, applied)
    groups = await _ensure_groups(session, [(a.channel, a.group_id, a.group_name) for a in fresh]
                                  + [(p.channel, p.group_id, None) for p in posts], now)
    people: dict[tuple[str, str], MemberInfo] = {}
    sources: dict[tuple[str, str], str] = {}
    for arrival in fresh:
        for member in arrival.members:
            key = (arrival.channel, member.id)
            known = people.get(key)
            people[key] = member if known is None else MemberInfo(member.id, member.name or known.name,
                                                                  member.unionid or known.unionid)
            sources.setdefault(key, f"group:{arrival.group_id}")
    own = await _ensure_member_customers(session, people, sources, now, applied)
    everyone = {(a.channel, m.id) for a in arrivals for m in a.members}  # a retry's members too
    applied.accounts.update(await member_accounts(session, sorted(everyone)))
    days: dict[int, _Day] = {}
    entries = [_arrival_entry(a, groups[(a.channel, a.group_id)].id, own.get((a.channel, a.members[0].id))
                              if a.kind == MESSAGE and a.members else None) for a in fresh]
    for post in posts:
        group = groups[(post.channel, post.group_id)]
        entries.append({"channel": post.channel, "event_id": None, "group_id": group.id, "kind": post.kind,
                        "direction": "out", "member_id": post.member_id, "customer_id": None,
                        "members": post.mention, "text": post.text, "addressed": False, "delivery": PASSIVE,
                        "attempts": 0, "due_at": None, "reason": None, "occurred_at": post.occurred_at,
                        "payload": {}})
        if post.answered:
            days.setdefault(group.id, _Day()).answers += 1
    if entries:
        await session.execute(insert(GroupEntry), entries)
    # After the log's entries, so a welcome these joins start comes after them.
    await _memberships(session, fresh, groups, own, applied, days, now, today, welcome_due)
    for arrival in fresh:
        if arrival.kind == MESSAGE:
            days.setdefault(groups[(arrival.channel, arrival.group_id)].id, _Day()).messages += 1
    await _add_days(session, groups, days, today)
    return applied


async def _fresh(session: AsyncSession, arrivals: Sequence[GroupArrival], applied: Applied) -> list[GroupArrival]:
    """The arrivals not stored before (nor earlier in the batch); the others are duplicates."""
    keys = {(a.channel, a.event_id) for a in arrivals}
    stored: set[tuple[str, str]] = set()
    if keys:
        stored = {(str(row[0]), str(row[1])) for row in await session.execute(
            select(GroupEntry.channel, GroupEntry.event_id).where(
                _pairs(GroupEntry.channel, GroupEntry.event_id, keys)))}
    fresh, seen = [], set(stored)
    for arrival in arrivals:
        key = (arrival.channel, arrival.event_id)
        if key in seen:
            applied.duplicates.add(key)
            continue
        seen.add(key)
        fresh.append(arrival)
    return fresh


async def _ensure_groups(session: AsyncSession, wanted: Iterable[tuple[str, str, str | None]],
                         now: datetime) -> dict[tuple[str, str], _Group]:
    names: dict[tuple[str, str], str | None] = {}
    for channel, external_id, name in wanted:
        names[(channel, external_id)] = name or names.get((channel, external_id))
    if not names:
        return {}
    dialect = session.get_bind().dialect.name

    async def existing() -> dict[tuple[str, str], Any]:
        rows = await session.execute(
            select(ChatGroup.id, ChatGroup.channel, ChatGroup.external_id, ChatGroup.name, ChatGroup.member_count,
                   ChatGroup.welcome_post_id)
            .where(_pairs(ChatGroup.channel, ChatGroup.external_id, names)).order_by(ChatGroup.id))
        return {(row.channel, row.external_id): row for row in rows}

    found = await existing()
    missing = [key for key in sorted(names) if key not in found]
    for channel, external_id in missing:
        await session.execute(insert_ignore(dialect, ChatGroup, {
            "channel": channel, "external_id": external_id, "name": names[(channel, external_id)] or "",
            "member_count": 0, "created_at": now, "last_activity_at": now}))
    if missing:
        found = await existing()
    groups: dict[tuple[str, str], _Group] = {}
    for key, row in sorted(found.items(), key=lambda item: item[1].id):  # row locks in id order
        name = names[key]
        values: dict[str, Any] = {"last_activity_at": now}
        if name and name != row.name:
            values["name"] = name
        await session.execute(update(ChatGroup).where(ChatGroup.id == row.id).values(**values))
        groups[key] = _Group(row.id, key[0], key[1], row.member_count, row.welcome_post_id)
    return groups


async def _ensure_member_customers(session: AsyncSession, people: dict[tuple[str, str], MemberInfo],
                                   sources: dict[tuple[str, str], str], now: datetime,
                                   applied: Applied) -> dict[tuple[str, str], int]:
    """Each member's own customer (created on first contact, with the group as its source); a
    unionid the platform gives is kept when the customer has none, and their name as it is now."""
    if not people:
        return {}
    dialect = session.get_bind().dialect.name

    async def existing(keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        rows = await session.execute(
            select(Customer.id, Customer.channel, Customer.external_id, Customer.unionid, Customer.nickname)
            .where(_pairs(Customer.channel, Customer.external_id, keys)))
        return {(row.channel, row.external_id): row for row in rows}

    found = await existing(people)
    created_ids = []
    for key in sorted(set(people) - set(found)):
        member = people[key]
        row = {"channel": key[0], "external_id": key[1], "created_at": now, "stage": CONTACT, "subscribed": True,
               "unionid": member.unionid, "nickname": (member.name or None) and member.name[:128],
               "source": sources[key]}
        result = cast(CursorResult[Any], await session.execute(insert_ignore(dialect, Customer, row)))
        if result.rowcount:
            created_ids.append(key)
    if created_ids:
        found.update(await existing(created_ids))
        new_ids = [found[key].id for key in created_ids]
        applied.created.extend((await session.execute(
            select(Customer).where(Customer.id.in_(new_ids)).order_by(Customer.id))).scalars())
    for key, member in sorted(people.items(), key=lambda item: found[item[0]].id):
        row = found[key]
        values: dict[str, Any] = {}
        if member.unionid and not row.unionid:
            values["unionid"] = member.unionid
        if member.name and member.name[:128] != row.nickname:
            values["nickname"] = member.name[:128]  # the name they go by in groups now
        if values and key not in created_ids:
            await session.execute(update(Customer).where(Customer.id == row.id).values(**values)
                                  .execution_options(synchronize_session=False))
    return {key: row.id for key, row in found.items()}


async def member_accounts(session: AsyncSession,
                          members: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Account]:
    """The record of each (channel, member id): the account-channel customer sharing their
    unionid, else their own customer. Members never seen are left out."""
    if not members:
        return {}
    rows = (await session.execute(
        select(Customer.id, Customer.channel, Customer.external_id, Customer.unionid)
        .where(_pairs(Customer.channel, Customer.external_id, members)))).all()
    unionids = {row.unionid for row in rows if row.unionid}
    linked: dict[str, Account] = {}
    if unionids:
        preference = case({channel: rank for rank, channel in enumerate(ACCOUNT_CHANNELS)},
                          value=Customer.channel)
        for row in await session.execute(
                select(Customer.id, Customer.channel, Customer.external_id, Customer.unionid)
                .where(Customer.unionid.in_(sorted(unionids)), Customer.channel.in_(ACCOUNT_CHANNELS))
                .order_by(preference.desc(), Customer.id.desc())):
            linked[row.unionid] = Account(row.id, row.channel, row.external_id)  # the preferred one last
    accounts = {}
    for row in rows:
        key = (row.channel, row.external_id)
        link = linked.get(row.unionid) if row.unionid and row.channel not in ACCOUNT_CHANNELS else None
        accounts[key] = link or Account(row.id, row.channel, row.external_id)
    return accounts


async def _memberships(session: AsyncSession, fresh: Sequence[GroupArrival], groups: dict[tuple[str, str], _Group],
                       own: dict[tuple[str, str], int], applied: Applied, days: dict[int, _Day],
                       now: datetime, today: date, welcome_due: datetime | None) -> None:
    """Joins, leaves and speakers: membership rows, member counts, the day's joins/leaves/speakers."""
    wanted = sorted({(groups[(a.channel, a.group_id)].id, a.channel, m.id) for a in fresh for m in a.members})
    if not wanted:
        return
    dialect = session.get_bind().dialect.name
    keys = sorted({(group_id, member_id) for group_id, _, member_id in wanted})

    async def locked() -> dict[tuple[int, str], Any]:
        return {(row.group_id, row.member_id): row for row in await session.execute(
            select(GroupMembership.id, GroupMembership.group_id, GroupMembership.member_id, GroupMembership.state,
                   GroupMembership.last_spoke_on)
            .where(_pairs(GroupMembership.group_id, GroupMembership.member_id, keys))
            .order_by(GroupMembership.id).with_for_update())}

    rows = await locked()
    fresh_keys = set()
    for group_id, channel, member_id in wanted:
        if (group_id, member_id) not in rows:
            await session.execute(insert_ignore(dialect, GroupMembership, {
                "group_id": group_id, "member_id": member_id, "customer_id": own[(channel, member_id)],
                "state": LEFT, "joined_at": None, "left_at": None, "last_spoke_on": None, "welcome_post_id": None}))
            fresh_keys.add((group_id, member_id))
    if fresh_keys:
        rows = await locked()
    state = {key: row.state for key, row in rows.items()}
    spoke = {key: row.last_spoke_on for key, row in rows.items()}
    changes: dict[tuple[int, str], dict[str, Any]] = {}
    by_id = {group.id: group for group in groups.values()}
    welcomes: dict[int, int] = {}
    for arrival in fresh:
        group = groups[(arrival.channel, arrival.group_id)]
        day = days.setdefault(group.id, _Day())
        for member in arrival.members:
            key = (group.id, member.id)
            account = applied.accounts.get((arrival.channel, member.id))
            change = changes.setdefault(key, {})
            if arrival.kind == JOIN or (arrival.kind == MESSAGE and key in fresh_keys and state[key] == LEFT
                                        and "joined_at" not in change):
                if state[key] != JOINED:
                    state[key] = JOINED
                    day.members_delta += 1
                    change.update(state=JOINED, left_at=None)
                    if arrival.kind == JOIN:
                        day.joins += 1
                        change["joined_at"] = arrival.occurred_at
                        if account is not None:
                            applied.joined.append((account.customer_id, arrival.group_id))
                        if welcome_due is not None:
                            if group.id not in welcomes:
                                welcomes[group.id] = await _gathering_welcome(session, group, welcome_due, now,
                                                                              applied)
                            change["welcome_post_id"] = welcomes[group.id]
                    else:
                        change["joined_at"] = None  # seen speaking: in the group, join time unknown
            elif arrival.kind == LEAVE and state[key] == JOINED:
                state[key] = LEFT
                day.members_delta -= 1
                day.leaves += 1
                change.update(state=LEFT, left_at=arrival.occurred_at)
                if account is not None:
                    applied.left.append((account.customer_id, arrival.group_id))
            elif arrival.kind == LEAVE and key in fresh_keys:
                day.leaves += 1  # never seen in the group before; it left all the same
                change.update(state=LEFT, left_at=arrival.occurred_at)
            if arrival.kind == MESSAGE and (spoke[key] is None or spoke[key] < today):
                spoke[key] = today
                change["last_spoke_on"] = today
                day.speakers += 1
                if account is not None:
                    applied.first_today.append(account.customer_id)
    for key, change in sorted(changes.items(), key=lambda item: rows[item[0]].id):
        if change:
            await session.execute(update(GroupMembership).where(GroupMembership.id == rows[key].id).values(**change))
    for group_id, day in days.items():
        if day.members_delta:
            await session.execute(update(ChatGroup).where(ChatGroup.id == group_id)
                                  .values(member_count=ChatGroup.member_count + day.members_delta))
            by_id[group_id].member_count += day.members_delta


async def _gathering_welcome(session: AsyncSession, group: _Group, due: datetime, now: datetime,
                             applied: Applied) -> int:
    """The group's welcome still gathering newcomers (not claimed yet: locked, so a claim waits for
    these joins), or a new one due at `due`."""
    if group.welcome_post_id is not None:
        pending = (await session.execute(
            select(GroupEntry.id).where(GroupEntry.id == group.welcome_post_id, GroupEntry.delivery == PENDING,
                                        GroupEntry.attempts == 0).with_for_update())).scalar()
        if pending is not None:
            return int(pending)
    result = await session.execute(insert(GroupEntry).values(
        channel=group.channel, event_id=None, group_id=group.id, kind=WELCOME, direction="out", member_id=None,
        customer_id=None, members=[], text="", addressed=False, delivery=PENDING, attempts=0, due_at=due,
        reason=None, occurred_at=now, payload={}))
    (post_id,) = cast(CursorResult[Any], result).inserted_primary_key or (None,)
    if post_id is None:
        raise RuntimeError("the database gave the welcome post no id")
    await session.execute(update(ChatGroup).where(ChatGroup.id == group.id).values(welcome_post_id=post_id))
    group.welcome_post_id = int(post_id)
    applied.welcomes.append((group.channel, post_id))
    return post_id


def _arrival_entry(arrival: GroupArrival, group_id: int, customer_id: int | None) -> dict[str, Any]:
    return {"channel": arrival.channel, "event_id": arrival.event_id, "group_id": group_id, "kind": arrival.kind,
            "direction": "in", "member_id": arrival.members[0].id if arrival.kind == MESSAGE and arrival.members
            else None, "customer_id": customer_id, "members": [m.id for m in arrival.members]
            if arrival.kind != MESSAGE else [], "text": arrival.text, "addressed": arrival.addressed,
            "delivery": None, "attempts": 0, "due_at": None, "reason": None, "occurred_at": arrival.occurred_at,
            "payload": arrival.payload}


async def _add_days(session: AsyncSession, groups: dict[tuple[str, str], _Group], days: dict[int, _Day],
                    today: date) -> None:
    dialect = session.get_bind().dialect.name
    by_id = {group.id: group for group in groups.values()}
    for group_id in sorted(days):
        day = days[group_id]
        await session.execute(insert_ignore(dialect, GroupDay, {
            "group_id": group_id, "day": today, "members": 0, "joins": 0, "leaves": 0, "messages": 0,
            "speakers": 0, "answers": 0}))
        await session.execute(update(GroupDay).where(GroupDay.group_id == group_id, GroupDay.day == today).values(
            members=by_id[group_id].member_count, joins=GroupDay.joins + day.joins,
            leaves=GroupDay.leaves + day.leaves, messages=GroupDay.messages + day.messages,
            speakers=GroupDay.speakers + day.speakers, answers=GroupDay.answers + day.answers))


# ---- lifecycle reads ---------------------------------------------------------------------------

async def recent_event_counts(session: AsyncSession, customer_ids: Sequence[int], kind: str,
                              since: datetime) -> dict[int, int]:
    """How many `kind` events each customer has since `since`, in one statement."""
    if not customer_ids:
        return {}
    rows = await session.execute(
        select(Event.customer_id, func.count()).where(Event.customer_id.in_(sorted(set(customer_ids))),
                                                      Event.kind == kind, Event.occurred_at > since)
        .group_by(Event.customer_id))
    return {int(customer_id): int(count) for customer_id, count in rows if customer_id is not None}


async def customer_stages(session: AsyncSession, customer_ids: Sequence[int]) -> dict[int, str]:
    if not customer_ids:
        return {}
    rows = await session.execute(select(Customer.id, Customer.stage).where(Customer.id.in_(sorted(set(customer_ids)))))
    return {int(customer_id): stage for customer_id, stage in rows}


async def mark_active(session: AsyncSession, customer_ids: Sequence[int], now: datetime) -> None:
    """The customers did something (spoke in a group, joined one): not inactive, for the churn rule."""
    if customer_ids:
        await session.execute(update(Customer).where(Customer.id.in_(sorted(set(customer_ids))))
                              .values(last_active_at=now).execution_options(synchronize_session=False))


async def lock_customers(session: AsyncSession, customer_ids: Sequence[int]) -> list[Customer]:
    """The customers' rows, locked in id order (as every multi-customer writer locks them)."""
    if not customer_ids:
        return []
    return list((await session.execute(
        select(Customer).where(Customer.id.in_(sorted(set(customer_ids)))).order_by(Customer.id)
        .with_for_update().execution_options(populate_existing=True))).scalars())


# ---- welcome posts -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PostToSend:
    id: int
    channel: str
    group_id: str  # the platform's group id
    group_name: str
    kind: str
    text: str
    mention: list[str]
    attempts: int  # including this one


async def due_posts(session: AsyncSession, now: datetime, limit: int = 100) -> list[int]:
    """Posts whose time has come (or whose sender died mid-call: their lease ran out)."""
    rows = await session.execute(
        select(GroupEntry.id).where(GroupEntry.delivery.in_([PENDING, SENDING]), GroupEntry.due_at <= now)
        .order_by(GroupEntry.due_at, GroupEntry.id).limit(limit))
    return [int(row[0]) for row in rows]


async def claim_post(session: AsyncSession, post_id: int, now: datetime, lease_until: datetime, *,
                     due_only: bool = True) -> PostToSend | None:
    """Take one post to send (a conditional UPDATE: of several processes one gets it). A welcome's
    mentions are its newcomers still in the group. None when it is not (or no longer) ours."""
    claimable = GroupEntry.delivery == PENDING
    if due_only:
        claimable = or_(and_(claimable, GroupEntry.due_at <= now),
                        and_(GroupEntry.delivery == SENDING, GroupEntry.due_at <= now))
    result = cast(CursorResult[Any], await session.execute(
        update(GroupEntry).where(GroupEntry.id == post_id, claimable)
        .values(delivery=SENDING, attempts=GroupEntry.attempts + 1, due_at=lease_until)
        .execution_options(synchronize_session=False)))
    if not result.rowcount:
        return None
    row = (await session.execute(
        select(GroupEntry.id, GroupEntry.channel, GroupEntry.kind, GroupEntry.text, GroupEntry.members,
               GroupEntry.attempts, ChatGroup.external_id, ChatGroup.name)
        .join(ChatGroup, ChatGroup.id == GroupEntry.group_id).where(GroupEntry.id == post_id))).one()
    mention = list(row.members or [])
    if row.kind == WELCOME:
        mention = list((await session.execute(
            select(GroupMembership.member_id).where(GroupMembership.welcome_post_id == post_id,
                                                    GroupMembership.state == JOINED)
            .order_by(GroupMembership.joined_at, GroupMembership.id))).scalars())
    return PostToSend(row.id, row.channel, row.external_id, row.name, row.kind, row.text, mention, row.attempts)


async def finish_post(session: AsyncSession, post_id: int, delivery: str, *, text: str, mention: list[str],
                      reason: str | None = None, retry_at: datetime | None = None) -> None:
    """Record what became of a post: sent, failed, or (retry_at) pending again."""
    await session.execute(update(GroupEntry).where(GroupEntry.id == post_id).values(
        delivery=PENDING if retry_at is not None else delivery, due_at=retry_at, reason=reason, text=text,
        members=mention).execution_options(synchronize_session=False))


# ---- what the console shows --------------------------------------------------------------------

async def group_list(session: AsyncSession, today: date, since: date, limit: int = 200) -> list[dict[str, Any]]:
    """The groups, busiest first: members now, and today's and the period's figures."""
    groups = list((await session.execute(
        select(ChatGroup).order_by(ChatGroup.last_activity_at.desc(), ChatGroup.id).limit(limit))).scalars())
    ids = [group.id for group in groups]
    figures: dict[int, dict[str, dict[str, int]]] = {gid: {"today": _zero(), "period": _zero()} for gid in ids}
    if ids:
        for row in await session.execute(select(GroupDay).where(GroupDay.group_id.in_(ids), GroupDay.day >= since)):
            day = row[0]
            for period in (("today",) if day.day == today else ()) + ("period",):
                bucket = figures[day.group_id][period]
                for name in _FIGURES:
                    bucket[name] += getattr(day, name)
    return [{"id": g.id, "channel": g.channel, "external_id": g.external_id, "name": g.name or g.external_id,
             "members": g.member_count, "last_activity_at": g.last_activity_at.isoformat(),
             **figures[g.id]} for g in groups]


_FIGURES = ("joins", "leaves", "messages", "speakers", "answers")


def _zero() -> dict[str, int]:
    return dict.fromkeys(_FIGURES, 0)


async def group_detail(session: AsyncSession, group_id: int, since: date,
                       limit: int = 100) -> dict[str, Any] | None:
    """One group: its figures per day since `since`, its members now, its recent log."""
    group = await session.get(ChatGroup, group_id)
    if group is None:
        return None
    days = list((await session.execute(select(GroupDay).where(GroupDay.group_id == group_id, GroupDay.day >= since)
                                       .order_by(GroupDay.day))).scalars())
    entries = list((await session.execute(select(GroupEntry).where(GroupEntry.group_id == group_id)
                                          .order_by(GroupEntry.id.desc()).limit(limit))).scalars())[::-1]
    names = await _member_names(session, group.channel, {e.member_id for e in entries if e.member_id}
                                | {m for e in entries for m in (e.members or [])})
    return {
        "group": {"id": group.id, "channel": group.channel, "external_id": group.external_id,
                  "name": group.name or group.external_id, "members": group.member_count},
        "days": [{"day": d.day.isoformat(), **{name: getattr(d, name) for name in ("members", *_FIGURES)}}
                 for d in days],
        "log": [{"id": e.id, "kind": e.kind, "direction": e.direction, "member": e.member_id,
                 "name": names.get(e.member_id or ""), "members": [names.get(m, m) for m in e.members or []],
                 "text": e.text, "addressed": e.addressed, "delivery": e.delivery, "reason": e.reason,
                 "at": e.occurred_at.isoformat()} for e in entries],
    }


async def _member_names(session: AsyncSession, channel: str, member_ids: set[str]) -> dict[str, str]:
    if not member_ids:
        return {}
    rows = await session.execute(select(Customer.external_id, Customer.nickname).where(
        Customer.channel == channel, Customer.external_id.in_(sorted(member_ids))))
    return {external_id: nickname for external_id, nickname in rows if nickname}


async def group_entries_after(session: AsyncSession, channel: str, group_id: str, after: int,
                              limit: int = 100) -> list[GroupEntry]:
    """A group's log after entry `after` (the simulator's room polls it)."""
    return list((await session.execute(
        select(GroupEntry).join(ChatGroup, ChatGroup.id == GroupEntry.group_id)
        .where(ChatGroup.channel == channel, ChatGroup.external_id == group_id, GroupEntry.id > after)
        .order_by(GroupEntry.id).limit(limit))).scalars())


async def last_entry_id(session: AsyncSession) -> int:
    last = (await session.execute(select(func.max(GroupEntry.id)))).scalar()
    return int(last or 0)
