"""What WeCom's servers do for Customer Service callbacks, written independently of the code
under test: AES-256-CBC with the `cryptography` package, sha1 signatures with hashlib."""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import time
from dataclasses import dataclass

from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

CORP_ID = "ww0123456789abcdef"
SECRET = "kf-test-secret"
TOKEN = "siyu-kf-token"
AES_KEY = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"


def wecom_encrypt(message: str, receive_id: str = CORP_ID, aes_key: str = AES_KEY,
                  random16: bytes | None = None) -> str:
    key = base64.b64decode(aes_key + "=")
    body = message.encode()
    plain = (random16 or os.urandom(16)) + struct.pack(">I", len(body)) + body + receive_id.encode()
    pad = 32 - len(plain) % 32
    plain += bytes([pad]) * pad
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypt])).encode()).hexdigest()


def notification_xml(open_kfid: str = "wkKF1", token: str = "ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR") -> str:
    return (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><CreateTime>{int(time.time())}</CreateTime>"
            f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>"
            f"<Token><![CDATA[{token}]]></Token><OpenKfId><![CDATA[{open_kfid}]]></OpenKfId></xml>")


@dataclass
class WecomKfServer:
    client: TestClient
    path: str = "/wecom/kf"
    token: str = TOKEN

    def query(self, encrypt: str, timestamp: int | None = None, nonce: str = "5837292") -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        return {"msg_signature": signature(self.token, ts, nonce, encrypt), "timestamp": ts, "nonce": nonce}

    async def notify(self, open_kfid: str = "wkKF1", **kwargs: object) -> tuple[int, str]:
        encrypt = wecom_encrypt(notification_xml(open_kfid))
        body = f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        return await self.post(body, self.query(encrypt, **kwargs))  # type: ignore[arg-type]

    async def post(self, body: str | bytes, params: dict[str, str]) -> tuple[int, str]:
        response = await self.client.post(self.path, params=params, data=body, headers={"Content-Type": "text/xml"})
        return response.status, await response.text()
