"""WeCom callbacks' common edge: the signed query checked, the envelope read, the payload decrypted.

Every WeCom callback (Customer Service, customer contact) is encrypted with the receive id = the
CorpID and signed as `msg_signature` = sha1 of the sorted token, timestamp, nonce and ciphertext;
the URL check's `echostr` is itself ciphertext and is answered decrypted.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import xmltodict
from aiohttp import web

from bot.app.http_body import read_limited
from bot.channels.wechat_crypto import CryptoError, MessageCrypto, signature_matches

# Unix seconds: WeCom sends 10 digits; more than 12 is no time at all.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
MAX_ECHOSTR = 1024


class CallbackRefused(Exception):
    """A callback that is not taken: `status` is the HTTP status to answer, `reason` why."""

    def __init__(self, status: type[web.HTTPException], reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class WecomCallbackEdge:
    token: str
    crypto: MessageCrypto
    timestamp_tolerance_seconds: int
    max_body_bytes: int

    @classmethod
    def build(cls, token: str, encoding_aes_key: str, corp_id: str, *, timestamp_tolerance_seconds: int,
              max_body_bytes: int) -> WecomCallbackEdge:
        return cls(token, MessageCrypto(token, encoding_aes_key, corp_id), timestamp_tolerance_seconds,
                   max_body_bytes)

    def _checked(self, request: web.Request, encrypted: str) -> None:
        query = request.query
        timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise CallbackRefused(web.HTTPForbidden, "missing or bad timestamp")
        if abs(time.time() - int(timestamp)) > self.timestamp_tolerance_seconds:
            raise CallbackRefused(web.HTTPForbidden, "stale timestamp")
        if not signature_matches(query.get("msg_signature", ""), self.token, timestamp, nonce, encrypted):
            raise CallbackRefused(web.HTTPForbidden, "bad msg_signature")

    def verify_url(self, request: web.Request) -> str:
        """The URL check: `echostr` decrypted, when the signature over it is ours."""
        echo = request.query.get("echostr", "")
        if not echo or len(echo) > MAX_ECHOSTR:
            raise CallbackRefused(web.HTTPBadRequest, "missing or oversized echostr")
        self._checked(request, echo)
        return self._decrypt(echo)

    async def receive(self, request: web.Request) -> dict[str, Any]:
        """The decrypted callback's fields (its `<xml>` element as xmltodict reads it)."""
        raw = await read_limited(request, self.max_body_bytes)
        if raw is None:
            raise CallbackRefused(web.HTTPRequestEntityTooLarge, "body too large")
        encrypted = _envelope_encrypt(raw)
        self._checked(request, encrypted)
        return _xml_fields(self._decrypt(encrypted))

    def _decrypt(self, encrypted: str) -> str:
        try:
            return self.crypto.decrypt(encrypted)
        except CryptoError as error:
            raise CallbackRefused(web.HTTPBadRequest, f"cannot decrypt: {error}") from None


def _envelope_encrypt(raw: bytes) -> str:
    try:
        envelope = xmltodict.parse(raw.decode("utf-8"))["xml"]
        encrypted = envelope["Encrypt"]
    except Exception:  # noqa: BLE001 - a malformed or hostile envelope of any sort
        raise CallbackRefused(web.HTTPBadRequest, "malformed XML") from None
    if not isinstance(encrypted, str) or not encrypted:
        raise CallbackRefused(web.HTTPBadRequest, "malformed XML")
    return encrypted


def _xml_fields(xml: str) -> dict[str, Any]:
    try:
        fields = xmltodict.parse(xml)["xml"]
    except Exception:  # noqa: BLE001 - decrypted but not XML we can read
        raise CallbackRefused(web.HTTPBadRequest, "malformed XML") from None
    if not isinstance(fields, dict):
        raise CallbackRefused(web.HTTPBadRequest, "malformed XML")
    return fields
