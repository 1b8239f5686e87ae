"""WeChat's callback crypto against published sample vectors, not against our own encryption.

The Official Account vector is the sample of Tencent's 消息加解密 documentation and its
WXBizMsgCrypt sample code (token `spamtest`, AppID `wx2c2769f8efd9abc2`): a text message
"abcdteT" from `oyORnuP8q7ou2gfYjqLzSIWZf0rs`, sent in compatible mode. The WeCom vectors
(corp `wx49f0ab532d5d035a`) are the ones wechatpy's own tests carry for its WeCom crypto.
"""

from __future__ import annotations

import time

import pytest
import xmltodict
from wechatpy.crypto import WeChatCrypto

from bot.channels.wechat_crypto import CryptoError, MessageCrypto, sign, signature_matches
from tests.support.db import messages
from tests.support.wechat import WechatServer

# --- Tencent's Official Account sample ----------------------------------------------------------
MP_TOKEN = "spamtest"
MP_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
MP_APP_ID = "wx2c2769f8efd9abc2"
MP_TIMESTAMP = "1409735669"
MP_NONCE = "1320562132"
MP_MSG_SIGNATURE = "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
MP_ENCRYPT = (
    "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmO"
    "D2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKO"
    "IbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJS"
    "VO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM"
    "669WuMyVWQLCzpu9GhglF2PE="
)
# The sample's callback body: compatible mode, the plaintext fields beside the ciphertext.
MP_BODY = (
    "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>"
    "<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>"
    "<CreateTime>1409735668</CreateTime><MsgType><![CDATA[text]]></MsgType>"
    "<Content><![CDATA[abcdteT]]></Content><MsgId>6054768590064713728</MsgId>"
    f"<Encrypt><![CDATA[{MP_ENCRYPT}]]></Encrypt></xml>"
)
MP_PLAINTEXT = (
    "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>\n"
    "<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>\n"
    "<CreateTime>1409735668</CreateTime>\n<MsgType><![CDATA[text]]></MsgType>\n"
    "<Content><![CDATA[abcdteT]]></Content>\n<MsgId>6054768590064713728</MsgId>\n</xml>"
)
MP_OPENID = "oyORnuP8q7ou2gfYjqLzSIWZf0rs"

# --- wechatpy's WeCom vectors --------------------------------------------------------------------
WORK_TOKEN = "123456"
WORK_AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
WORK_CORP_ID = "wx49f0ab532d5d035a"
WORK_ECHO = "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q=="
WORK_ECHO_SIGNATURE = "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96"  # timestamp 1411443780, nonce 437374425
WORK_ENCRYPT = (
    "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTyeDXzF6Bv2"
    "83dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYyolBug/gYNx410cvkK"
    "R2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgp"
    "kHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbc"
    "X2e8K9QaNWHp91eBdCRxthuL0="
)
WORK_ENCRYPT_SIGNATURE = "74d92dfeb87ba7c714f89d98870ae5eb62dff26d"  # timestamp 1411525903, nonce 461056294


# --- signatures ---------------------------------------------------------------------------------

def test_msg_signature_of_the_official_sample_is_the_published_one():
    assert sign(MP_TOKEN, MP_TIMESTAMP, MP_NONCE, MP_ENCRYPT) == MP_MSG_SIGNATURE
    assert signature_matches(MP_MSG_SIGNATURE, MP_TOKEN, MP_TIMESTAMP, MP_NONCE, MP_ENCRYPT)
    assert not signature_matches(MP_MSG_SIGNATURE, MP_TOKEN, MP_TIMESTAMP, "1320562133", MP_ENCRYPT)


def test_wecom_signatures_of_wechatpys_vectors_are_the_published_ones():
    assert sign(WORK_TOKEN, "1411443780", "437374425", WORK_ECHO) == WORK_ECHO_SIGNATURE
    assert sign(WORK_TOKEN, "1411525903", "461056294", WORK_ENCRYPT) == WORK_ENCRYPT_SIGNATURE
    assert not signature_matches(WORK_ECHO_SIGNATURE, WORK_TOKEN, "1411443780", "437374424", WORK_ECHO)


# --- decryption ---------------------------------------------------------------------------------

def test_official_sample_ciphertext_decrypts_to_the_sample_message():
    crypto = MessageCrypto(MP_TOKEN, MP_AES_KEY, MP_APP_ID)
    assert crypto.decrypt(MP_ENCRYPT) == MP_PLAINTEXT


def test_official_sample_is_refused_for_another_app_id():
    with pytest.raises(CryptoError, match="another AppID"):
        MessageCrypto(MP_TOKEN, MP_AES_KEY, "wx0123456789abcdef").decrypt(MP_ENCRYPT)


def test_wecom_vectors_decrypt_to_their_known_plaintext():
    crypto = MessageCrypto(WORK_TOKEN, WORK_AES_KEY, WORK_CORP_ID)
    assert crypto.decrypt(WORK_ECHO) == "5927782489442352469"  # the URL check's echostr
    message = xmltodict.parse(crypto.decrypt(WORK_ENCRYPT))["xml"]
    assert (message["FromUserName"], message["Content"], message["AgentID"]) == ("messense", "test", "1")


def test_our_encryption_decrypts_with_wechatpy_and_the_official_key():
    """The other direction has no fixed vector (a random prefix): wechatpy reads our envelope."""
    crypto = MessageCrypto(MP_TOKEN, MP_AES_KEY, MP_APP_ID)
    envelope = crypto.envelope("<xml><Content><![CDATA[你好]]></Content></xml>", MP_NONCE, MP_TIMESTAMP)
    fields = xmltodict.parse(envelope)["xml"]
    assert fields["MsgSignature"] == sign(MP_TOKEN, MP_TIMESTAMP, MP_NONCE, fields["Encrypt"])
    theirs = WeChatCrypto(MP_TOKEN, MP_AES_KEY, MP_APP_ID)
    assert theirs.decrypt_message(envelope, fields["MsgSignature"], MP_TIMESTAMP, MP_NONCE) == \
        "<xml><Content><![CDATA[你好]]></Content></xml>"


# --- the running app ----------------------------------------------------------------------------

def _sample_query() -> dict[str, str]:
    return {"signature": sign(MP_TOKEN, MP_TIMESTAMP, MP_NONCE), "timestamp": MP_TIMESTAMP,
            "nonce": MP_NONCE, "encrypt_type": "aes", "msg_signature": MP_MSG_SIGNATURE}


async def _sample_account(wechat, url: str) -> WechatServer:
    # The sample dates from 2014: accept its timestamp, as an account configured this way would.
    tolerance = int(time.time()) - int(MP_TIMESTAMP) + 3600
    server = await wechat(mode="safe", url=url, token=MP_TOKEN, app_id=MP_APP_ID, encoding_aes_key=MP_AES_KEY,
                          timestamp_tolerance_seconds=tolerance)
    server.token = MP_TOKEN
    server.crypto = WeChatCrypto(MP_TOKEN, MP_AES_KEY, MP_APP_ID)
    return server


@pytest.mark.parametrize("body", [
    MP_BODY,
    f"<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><Encrypt><![CDATA[{MP_ENCRYPT}]]></Encrypt></xml>",
], ids=["compatible mode, as sampled", "safe mode, ciphertext only"])
async def test_official_sample_callback_is_decrypted_stored_and_answered(wechat, backend_url, body):
    server = await _sample_account(wechat, backend_url)
    status, reply_body = await server.post("", raw_body=body, params=_sample_query())
    assert status == 200, reply_body
    reply = server.read_reply(reply_body, timestamp=int(MP_TIMESTAMP))  # checks MsgSignature too
    assert reply is not None and reply["ToUserName"] == MP_OPENID and reply["FromUserName"] == "gh_10f6c3c3ac5a"
    assert reply["Content"]
    stored = await messages(backend_url, MP_OPENID)
    assert [(m.direction, m.text) for m in stored] == [("in", "abcdteT"), ("out", reply["Content"])]
    assert stored[0].payload["MsgId"] == "6054768590064713728"


async def test_official_sample_with_a_forged_msg_signature_is_refused(wechat, backend_url):
    server = await _sample_account(wechat, backend_url)
    query = {**_sample_query(), "msg_signature": "0" * 40}
    status, _ = await server.post("", raw_body=MP_BODY, params=query)
    assert status == 403
    assert await messages(backend_url) == []
