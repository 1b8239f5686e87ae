"""Official Account callback: verify, decrypt, parse into `Inbound`, answer within the deadline.

Plain, compatible and safe (AES) modes. The outbox splits the answer: its first reply rides in
the callback's response, and the rest follow as customer-service messages once that response
is written out, so they never arrive first. If the answer is not ready before the deadline the
callback is acknowledged with `success` and the whole answer goes out by push.
When the pipeline already holds more messages than it takes on, the callback gets a quick 503
with nothing stored: WeChat delivers a callback that got no valid answer again (up to three
times, seconds apart), by when the backlog has usually cleared.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import UTC, datetime
from typing import Any

import xmltodict
from aiohttp import web
from wechatpy import parse_message
from wechatpy.events import BaseEvent
from wechatpy.messages import MESSAGE_TYPES, BaseMessage, UnknownMessage

from bot.app.background import BackgroundTasks
from bot.app.http_body import read_limited
from bot.app.metrics import Metrics
from bot.channels.wechat_crypto import CryptoError, MessageCrypto, _cdata, signature_matches
from bot.channels.wechat_mp.replay import ReplayGuard
from bot.channels.wechat_mp.sender import CHANNEL
from bot.clock import Clock
from bot.config.settings import WechatMpSettings
from bot.outbox.outbox import Answer, Outbox
from bot.pipeline.outcome import Outcome
from bot.pipeline.pipeline import Pipeline, PipelineOverloaded
from handlers.messages import EventKind, Inbound, InboundKind
from handlers.untrusted import text_problem

log = logging.getLogger(__name__)

SUCCESS = "success"  # stops WeChat's retries without sending anything
# Unix seconds: WeChat sends 10 digits; more than 12 is no time at all (and no float holds 400).
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# The longest each identifying field may be, so that what it becomes fits its column
# (storage/models.py): FromUserName is customers.external_id (128); MsgId, or CreateTime with
# the sender and the event, make messages.platform_msg_id (191); the EventKey of a follow or
# scan is customers.source (128), a menu link's (VIEW) may be a long URL. WeChat's own values
# are far shorter (an openid is 28 characters).
FIELD_LIMITS = {"FromUserName": 128, "ToUserName": 128, "MsgId": 32, "MsgID": 32, "CreateTime": 12,
                "MsgType": 32, "Event": 32, "EventKey": 1024}
SOURCE_KEY_LIMIT = 128
MAX_NONCE = 64  # WeChat's are about ten digits; callback_nonces.nonce holds 64
# wechatpy names a follow through a QR code subscribe_scan
_SOURCE_EVENTS = {"subscribe", "subscribe_scan", "scan"}


def field_problem(data: dict[str, Any]) -> str | None:
    """Why a parsed callback's identifying fields cannot be taken, or None."""
    for name, limit in FIELD_LIMITS.items():
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            return f"{name} is not text"
        if len(value) > limit:
            return f"{name} is longer than {limit} characters"
    key = data.get("EventKey")
    if (str(data.get("Event") or "").lower() in _SOURCE_EVENTS and isinstance(key, str)
            and len(key) > SOURCE_KEY_LIMIT):
        return f"EventKey of a follow or scan is longer than {SOURCE_KEY_LIMIT} characters"
    return None

_KINDS = {kind.value: kind for kind in InboundKind}
_EVENTS = {
    "subscribe": EventKind.SUBSCRIBE,
    "subscribe_scan": EventKind.SUBSCRIBE,
    "unsubscribe": EventKind.UNSUBSCRIBE,
    "scan": EventKind.SCAN,
    "click": EventKind.CLICK,
    "view": EventKind.VIEW,
    "location": EventKind.LOCATION,
    "templatesendjobfinish": EventKind.TEMPLATE_SENT,
}


def parse_callback(xml: str) -> BaseMessage | None:
    """wechatpy's `parse_message`, with a plain message (not an event) in the exact shape WeChat
    sends read by one regular expression instead of xmltodict's Python callbacks: the same
    fields, the same wechatpy message class, in a fraction of the time. Anything else (events,
    with wechatpy's mapping of their keys; a declaration, entities, attributes, nested or
    repeated elements; XML it cannot read) goes to wechatpy itself, which decides what it means
    or that it is malformed."""
    found = _plain_message_fields(xml)
    if found is None:
        return parse_message(xml)
    kind, fields = found
    message_class: type[BaseMessage] = MESSAGE_TYPES.get(kind, UnknownMessage)
    return message_class(fields)


# What an XML parser reads literally: no markup, no entity, no line break it would normalise, no
# character XML forbids. Text outside CDATA also leaves out "]" (so never "]]>"). Whitespace
# around a CDATA section goes with the stripping.
_LITERAL = "\x00-\x08\x0b\x0c\x0e-\x1f\r\ufffe\uffff"
_FIELD = re.compile(
    r"[ \t\r\n]*<([A-Za-z_][A-Za-z0-9_]*)>"
    r"(?:[ \t\r\n]*<!\[CDATA\[([^\]" + _LITERAL + r"]*(?:\](?!\]>)[^\]" + _LITERAL + r"]*)*)\]\]>[ \t\r\n]*"
    r"|([^<&\]" + _LITERAL + r"]*))"
    r"</\1>")
_END = re.compile(r"[ \t\r\n]*</xml>[ \t\r\n]*")


def _plain_message_fields(xml: str) -> tuple[str, dict[str, str | None]] | None:
    """The type and fields of a flat `<xml>` message as xmltodict gives them (text stripped,
    empty is None), or None when this is not exactly such a message: each element holds one
    CDATA section or plain text that any XML parser reads as it stands."""
    if not xml.startswith("<xml>"):
        return None
    fields: dict[str, str | None] = {}
    position = 5
    field = _FIELD.match
    while (found := field(xml, position)) is not None:
        tag, cdata, text = found.groups()
        if tag in fields:
            return None
        fields[tag] = (cdata if cdata is not None else text).strip() or None
        position = found.end()
    if _END.fullmatch(xml, position) is None:
        return None
    kind = (fields.get("MsgType") or "").lower()
    if not kind or kind == "event" or kind.startswith("device_"):
        return None
    return kind, fields


def passive_text_reply(to_user: str, from_user: str, content: str, created: int) -> str:
    """The passive text reply, exactly as wechatpy's TextReply renders it (CDATA kept whole),
    written in one f-string: it goes out with every answered callback, and TextReply's field
    objects cost several times as much."""
    return (f"<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[{_cdata(content)}]]></Content>\n"
            f"<FromUserName><![CDATA[{_cdata(from_user)}]]></FromUserName>\n"
            f"<ToUserName><![CDATA[{_cdata(to_user)}]]></ToUserName>\n<CreateTime>{created}</CreateTime>\n</xml>")


def to_inbound(message: BaseMessage, received_at: datetime) -> Inbound:
    """wechatpy's parsed message → the neutral inbound every handler sees."""
    data: dict[str, Any] = dict(message._data)
    source = str(data.get("FromUserName", ""))
    created = str(data.get("CreateTime", ""))
    msg_id = data.get("MsgId") or data.get("MsgID")
    if isinstance(message, BaseEvent):
        raw_event = str(data.get("Event", "")).lower()
        event = _EVENTS.get(getattr(message, "event", raw_event), EventKind.OTHER)
        key = data.get("EventKey") or None
        return Inbound(
            channel=CHANNEL, user_id=source, kind=InboundKind.EVENT, received_at=received_at,
            dedup_key=f"msg:{msg_id}" if msg_id else f"evt:{source}:{created}:{raw_event}",
            event=event, event_key=str(key) if key is not None else None,
            text=str(key) if event is EventKind.CLICK and key else "", payload=data,
        )
    kind = InboundKind.UNKNOWN if isinstance(message, UnknownMessage) else _KINDS.get(message.type, InboundKind.UNKNOWN)
    if kind is InboundKind.TEXT:
        text = str(data.get("Content") or "")
    elif kind is InboundKind.VOICE:
        text = str(data.get("Recognition") or "")  # speech recognition, when enabled in the console
    else:
        text = ""
    dedup = f"msg:{msg_id}" if msg_id else f"raw:{source}:{created}:{data.get('MsgType', '')}"
    return Inbound(channel=CHANNEL, user_id=source, kind=kind, received_at=received_at,
                   dedup_key=dedup, text=text, payload=data)


class WechatMpCallback:
    """The aiohttp handlers behind `GET|POST /wechat/mp`."""

    def __init__(self, settings: WechatMpSettings, pipeline: Pipeline, outbox: Outbox,
                 tasks: BackgroundTasks, metrics: Metrics, clock: Clock, replays: ReplayGuard):
        self._settings = settings
        self._replays = replays
        self._clock = clock
        self._pipeline = pipeline
        self._outbox = outbox
        self._tasks = tasks
        self._metrics = metrics
        self._crypto = (MessageCrypto(settings.token, settings.encoding_aes_key, settings.app_id)
                        if settings.encoding_aes_key else None)
        # Replies whose passive answer was abandoned at the deadline and go out by push.
        self._late: set[str] = set()
        # Looking a labelled child up costs more than counting: do it once for the per-message ones.
        self._inbound_by_kind = {kind: metrics.inbound.labels(CHANNEL, str(kind)) for kind in InboundKind}
        self._latency = metrics.latency.labels(CHANNEL)
        self._passive_replies = metrics.replies.labels(CHANNEL, "passive")

    def _reject(self, status: type[web.HTTPException], reason: str) -> web.HTTPException:
        self._metrics.rejected.labels(CHANNEL, reason).inc()
        return status(text=reason)

    def _check_signature(self, request: web.Request) -> tuple[str, str]:
        query = request.query
        timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise self._reject(web.HTTPForbidden, "missing or bad timestamp")
        if abs(time.time() - int(timestamp)) > self._settings.timestamp_tolerance_seconds:
            raise self._reject(web.HTTPForbidden, "stale timestamp")
        if not 0 < len(nonce) <= MAX_NONCE:
            raise self._reject(web.HTTPForbidden, "missing or bad nonce")
        if not signature_matches(query.get("signature", ""), self._settings.token, timestamp, nonce):
            raise self._reject(web.HTTPForbidden, "bad signature")
        return timestamp, nonce

    async def verify_url(self, request: web.Request) -> web.Response:
        """The console's URL check: echo `echostr` back when the signature is ours."""
        self._check_signature(request)
        echo = request.query.get("echostr", "")
        if len(echo) > 128 or text_problem(echo):
            raise self._reject(web.HTTPBadRequest, "bad echostr")
        return web.Response(text=echo)

    async def receive(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        timestamp, nonce = self._check_signature(request)
        body = await self._read_body(request)
        # A database too slow to take one insert must not hold WeChat's connection past its 5 s: the
        # callback is refused (503, nothing stored) and WeChat delivers it again.
        check = self._replays.is_replay(int(timestamp), nonce, body.encode("utf-8"), datetime.now(UTC))
        try:
            replayed = await asyncio.wait_for(check, max(self._settings.reply_deadline_seconds
                                                         - (time.monotonic() - started), 1.0))
        except TimeoutError:
            raise self._reject(web.HTTPServiceUnavailable, "replay check timed out") from None
        if replayed:
            # The signature is genuine, but it came with another body: someone reuses a captured URL.
            raise self._reject(web.HTTPForbidden, "replayed signature")
        encrypted = request.query.get("encrypt_type", "raw").lower() == "aes"
        xml = self._decrypt(request, body, timestamp, nonce) if encrypted else body
        try:
            message = parse_callback(xml)
        except Exception:  # noqa: BLE001 - any parser failure is the sender's malformed XML
            raise self._reject(web.HTTPBadRequest, "malformed XML") from None
        if message is None:
            raise self._reject(web.HTTPBadRequest, "malformed XML")
        problem = field_problem(message._data)
        if problem is not None:
            raise self._reject(web.HTTPBadRequest, problem)
        inbound = to_inbound(message, self._clock.now())
        if not inbound.user_id:
            raise self._reject(web.HTTPBadRequest, "malformed XML")
        self._inbound_by_kind[inbound.kind].inc()

        answer = await self._answer(inbound, started)
        self._latency.observe(time.monotonic() - started)
        if answer is None or not answer.passive:
            response = web.Response(text=SUCCESS)
        else:
            xml_reply = passive_text_reply(to_user=inbound.user_id,
                                           from_user=str(inbound.payload.get("ToUserName") or ""),
                                           content=answer.passive[0].text, created=int(time.time()))
            if encrypted and self._crypto is not None:
                xml_reply = self._crypto.envelope(xml_reply, nonce, timestamp)
            response = web.Response(text=xml_reply, content_type="application/xml")
        if answer is not None and answer.follow_ups:
            # The follow-ups must not overtake the passive reply: write it out first. They are
            # stored, so they go out even if WeChat hung up meanwhile (its retry gets the first
            # reply again, and nothing twice).
            try:
                await response.prepare(request)
                await response.write_eof()
            finally:
                self._tasks.spawn(self._outbox.deliver(CHANNEL, inbound.user_id, answer.follow_ups),
                                  name="wechat_mp follow-up")
        return response

    async def _read_body(self, request: web.Request) -> str:
        limit = self._settings.max_body_bytes
        raw = await read_limited(request, limit)
        if raw is None:
            self._metrics.rejected.labels(CHANNEL, "body too large").inc()
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length or limit + 1)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self._reject(web.HTTPBadRequest, "body is not UTF-8") from None

    def _decrypt(self, request: web.Request, body: str, timestamp: str, nonce: str) -> str:
        if self._crypto is None:
            raise self._reject(web.HTTPBadRequest, "safe mode message but no encoding_aes_key configured")
        try:
            envelope = xmltodict.parse(body)["xml"]
            encrypted = envelope["Encrypt"]
        except Exception:  # noqa: BLE001 - malformed envelope of any sort
            raise self._reject(web.HTTPBadRequest, "malformed XML") from None
        if not isinstance(encrypted, str) or not signature_matches(
            request.query.get("msg_signature", ""), self._settings.token, timestamp, nonce, encrypted
        ):
            raise self._reject(web.HTTPForbidden, "bad msg_signature")
        try:
            return self._crypto.decrypt(encrypted)
        except CryptoError as error:
            raise self._reject(web.HTTPBadRequest, f"cannot decrypt: {error}") from None

    async def _answer(self, inbound: Inbound, started: float) -> Answer | None:
        """The answer, split by the outbox between the passive reply and follow-ups; None to
        answer `success` (the answer, if any, goes out by push)."""
        if inbound.dedup_key in self._late:
            return None  # the first delivery's answer is already on its way by push
        if self._pipeline.overloaded:
            raise self._reject(web.HTTPServiceUnavailable, "overloaded")
        work = self._pipeline.start(inbound)
        if not work.done():
            await _until_done_or(work, self._settings.reply_deadline_seconds - (time.monotonic() - started))
        if not work.done():
            assert inbound.dedup_key is not None
            self._late.add(inbound.dedup_key)
            self._tasks.spawn(self._deliver_late(inbound, work), name="wechat_mp late reply")
            return None
        try:
            outcome = work.result()
        except PipelineOverloaded:
            raise self._reject(web.HTTPServiceUnavailable, "overloaded") from None
        if outcome.duplicate:
            self._metrics.duplicates.labels(CHANNEL).inc()
        answer = self._outbox.answer(CHANNEL, outcome, in_time=True)
        if answer.passive and not outcome.duplicate:
            self._passive_replies.inc()
        return answer

    async def _deliver_late(self, inbound: Inbound, work: asyncio.Future[Outcome]) -> None:
        key = inbound.dedup_key or ""
        try:
            outcome = await work
            answer = self._outbox.answer(CHANNEL, outcome, in_time=False)
            for pushed in await self._outbox.deliver(CHANNEL, inbound.user_id, answer.follow_ups):
                self._metrics.replies.labels(CHANNEL, pushed.state).inc()
        finally:
            # WeChat retries within seconds; after that the stored delivery state answers them.
            asyncio.get_running_loop().call_later(30, self._late.discard, key)


async def _until_done_or(work: asyncio.Future[Any], seconds: float) -> None:
    """Wait until the work is done or the seconds are up, leaving the work running either way
    (what asyncio.wait does, with less to set up: this runs for every message)."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = asyncio.get_running_loop().call_later(max(seconds, 0.0), wake)
    work.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        work.remove_done_callback(wake)
