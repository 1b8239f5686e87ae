"""WeChat callback signatures and AES message crypto (Official Account and WeCom alike).

AES comes from wechatpy's cipher; the checks around it are ours: signatures compared in
constant time, and a bad padding byte, length or receiver id is an error, not a crash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct

from wechatpy.crypto import PrpCrypto
from wechatpy.crypto.base import WeChatCipher


class CryptoError(ValueError):
    """The encrypted payload cannot be trusted (bad base64, padding, length or receiver)."""


def sign(*parts: str) -> str:
    """sha1 of the sorted, concatenated parts: WeChat's `signature` and `msg_signature`."""
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8", "surrogateescape")).hexdigest()


def signature_matches(given: str, *parts: str) -> bool:
    return hmac.compare_digest(sign(*parts).encode(), given.encode("utf-8", "surrogateescape"))


class MessageCrypto:
    def __init__(self, token: str, encoding_aes_key: str, receiver_id: str):
        self._token = token
        self._key = base64.b64decode(encoding_aes_key + "=")
        self._receiver_id = receiver_id

    def decrypt(self, encrypted: str) -> str:
        try:
            raw = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError) as error:
            raise CryptoError(f"Encrypt is not base64: {error}") from None
        if not raw or len(raw) % 16:
            raise CryptoError("Encrypt is not a whole number of AES blocks")
        plain = WeChatCipher(self._key).decrypt(raw)
        padding = plain[-1]
        if not 1 <= padding <= 32 or len(plain) < 20 + padding:
            raise CryptoError("bad PKCS#7 padding")
        content = plain[16:-padding]
        (length,) = struct.unpack(">I", content[:4])
        if 4 + length > len(content):
            raise CryptoError("message length exceeds the payload")
        message, receiver = content[4 : 4 + length], content[4 + length :]
        if not hmac.compare_digest(receiver, self._receiver_id.encode()):
            raise CryptoError("message is for another AppID / CorpID")
        try:
            return message.decode()
        except UnicodeDecodeError:
            raise CryptoError("decrypted message is not UTF-8") from None

    def encrypt(self, message: str) -> str:
        return PrpCrypto(self._key).encrypt(message, self._receiver_id).decode()

    def envelope(self, message: str, nonce: str, timestamp: str) -> str:
        """The encrypted reply WeChat expects: Encrypt, MsgSignature, TimeStamp, Nonce."""
        encrypted = self.encrypt(message)
        signature = sign(self._token, timestamp, nonce, encrypted)
        return (
            f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt>"
            f"<MsgSignature><![CDATA[{signature}]]></MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp><Nonce><![CDATA[{_cdata(nonce)}]]></Nonce></xml>"
        )


def _cdata(text: str) -> str:
    """Text safe inside CDATA: a literal `]]>` would end the section early."""
    return text.replace("]]>", "]]]]><![CDATA[>")
