"""What WeChat's servers do, written independently of the code under test.

Signatures with hashlib, encryption and reply decryption with wechatpy's own WeChatCrypto.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import xmltodict
from aiohttp.test_utils import TestClient
from wechatpy.crypto import WeChatCrypto

TOKEN = "siyu-test-token"
APP_ID = "wx0123456789abcdef"
APP_SECRET = "test-secret"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
ACCOUNT = "gh_siyu_test"

_ids = itertools.count(7_000_000_000_000_000_000)


def sha1_signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def text_xml(openid: str, content: str, msg_id: int | None = None, create_time: int | None = None) -> str:
    msg_id = next(_ids) if msg_id is None else msg_id
    return (f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{create_time or int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>")


def message_xml(openid: str, msg_type: str, fields: dict[str, Any], msg_id: int | None = None,
                create_time: int | None = None) -> str:
    body = "".join(f"<{k}><![CDATA[{v}]]></{k}>" if isinstance(v, str) else f"<{k}>{v}</{k}>"
                   for k, v in fields.items())
    msg_id = next(_ids) if msg_id is None else msg_id
    return (f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{create_time or int(time.time())}</CreateTime><MsgType><![CDATA[{msg_type}]]></MsgType>"
            f"{body}<MsgId>{msg_id}</MsgId></xml>")


def event_xml(openid: str, event: str, fields: dict[str, Any] | None = None, create_time: int | None = None) -> str:
    body = "".join(f"<{k}><![CDATA[{v}]]></{k}>" if isinstance(v, str) else f"<{k}>{v}</{k}>"
                   for k, v in (fields or {}).items())
    return (f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{create_time or int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[{event}]]></Event>{body}</xml>")


@dataclass
class WechatServer:
    """Signs (and in safe or compatible mode encrypts) callbacks as WeChat does."""

    client: TestClient
    path: str = "/wechat/mp"
    token: str = TOKEN
    mode: str = "plain"  # plain | compatible | safe
    crypto: WeChatCrypto = field(default_factory=lambda: WeChatCrypto(TOKEN, AES_KEY, APP_ID))

    def query(self, timestamp: int | None = None, nonce: str | None = None, encrypt: str | None = None,
              openid: str = "") -> dict[str, str]:
        """A signed query string; like WeChat, a fresh random nonce for every request."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        nonce = nonce or str(secrets.randbelow(10**10))
        params = {"signature": sha1_signature(self.token, ts, nonce), "timestamp": ts, "nonce": nonce}
        if openid:
            params["openid"] = openid
        if encrypt is not None:
            params["encrypt_type"] = "aes"
            params["msg_signature"] = sha1_signature(self.token, ts, nonce, encrypt)
        return params

    def envelope(self, xml: str) -> tuple[str, str]:
        """(body, Encrypt) for safe / compatible mode."""
        encrypted = xmltodict.parse(self.crypto.encrypt_message(xml, "1320562132"))["xml"]["Encrypt"]
        if self.mode == "safe":
            inner = xmltodict.parse(xml)["xml"]
            return (f"<xml><ToUserName><![CDATA[{inner['ToUserName']}]]></ToUserName>"
                    f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>", encrypted)
        # Compatible mode: the plaintext fields and the ciphertext side by side.
        return xml.replace("</xml>", f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"), encrypted

    async def post(self, xml: str, *, timestamp: int | None = None, raw_body: str | bytes | None = None,
                   params: dict[str, str] | None = None) -> tuple[int, str]:
        if raw_body is not None:
            body: str | bytes = raw_body
            query = self.query(timestamp)
        elif self.mode == "plain":
            body = xml
            query = self.query(timestamp)
        else:
            body, encrypted = self.envelope(xml)
            query = self.query(timestamp, encrypt=encrypted)
        response = await self.client.post(self.path, params=params or query, data=body,
                                          headers={"Content-Type": "text/xml"})
        return response.status, await response.text()

    def read_reply(self, body: str, timestamp: int | None = None) -> dict[str, Any] | None:
        """The reply as WeChat reads it: None for `success`/empty, else the reply's fields."""
        if body in ("", "success"):
            return None
        if self.mode != "plain":
            envelope = xmltodict.parse(body)["xml"]
            assert envelope["MsgSignature"] == sha1_signature(
                self.token, envelope["TimeStamp"], envelope["Nonce"], envelope["Encrypt"])
            body = self.crypto.decrypt_message(body, envelope["MsgSignature"], envelope["TimeStamp"],
                                               envelope["Nonce"])
        return dict(xmltodict.parse(body)["xml"])

    async def say(self, openid: str, content: str, **kwargs: Any) -> dict[str, Any] | None:
        status, body = await self.post(text_xml(openid, content, **kwargs))
        assert status == 200, body
        return self.read_reply(body)
