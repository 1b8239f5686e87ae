"""The callback's XML reader gives exactly what wechatpy's parse_message gives, for every kind of
callback: the quick reader for plain messages and wechatpy itself for everything else; and the
passive reply is the XML wechatpy's TextReply renders."""

from __future__ import annotations

import pytest
from wechatpy import parse_message
from wechatpy.replies import TextReply

from bot.channels.wechat_crypto import _cdata
from bot.channels.wechat_mp.callback import (
    _plain_message_fields,
    parse_callback,
    passive_text_reply,
)
from tests.support.wechat import event_xml, message_xml, text_xml

PLAIN = {
    "text": text_xml("o-amy", "几点开门？", msg_id=1),
    "text with markup in CDATA": text_xml("o-amy", "代码是 <b>x</b> & [a]] ]> 哦", msg_id=2),
    "text ending in a bracket": text_xml("o-amy", "见 [1]", msg_id=15),
    "text padded with spaces": text_xml("o-amy", "  你好  ", msg_id=3),
    "empty text": text_xml("o-amy", "", msg_id=4),
    "pretty printed": text_xml("o-amy", "hi", msg_id=6).replace("><", ">\n  <") + "\n",
    "plain text, no CDATA": text_xml("o-amy", "hi", msg_id=16).replace("<![CDATA[hi]]>", " hi > 1 "),
    "image": message_xml("o-amy", "image", {"PicUrl": "http://mmbiz.example/p.jpg", "MediaId": "m1"}, msg_id=7),
    "voice": message_xml("o-amy", "voice", {"MediaId": "m2", "Format": "amr", "Recognition": "查订单"}, msg_id=8),
    "video": message_xml("o-amy", "video", {"MediaId": "m3", "ThumbMediaId": "t3"}, msg_id=9),
    "shortvideo": message_xml("o-amy", "shortvideo", {"MediaId": "m4", "ThumbMediaId": "t4"}, msg_id=10),
    "location": message_xml("o-amy", "location", {"Location_X": "31.23", "Location_Y": "121.47", "Scale": 15,
                                                  "Label": "上海市黄浦区"}, msg_id=11),
    "link": message_xml("o-amy", "link", {"Title": "新品", "Description": "春季", "Url": "https://x.example/n"},
                        msg_id=12),
    "unknown type": message_xml("o-amy", "file", {"Title": "a.pdf"}, msg_id=13),
    "upper-case type": message_xml("o-amy", "TEXT", {"Content": "hi"}, msg_id=14),
}

OTHER = {
    "xml declaration": '<?xml version="1.0" encoding="utf-8"?>\n' + text_xml("o-amy", "hi", msg_id=5),
    "text split around ]]>": text_xml("o-amy", "代码是 ]]]]><![CDATA[> 哦", msg_id=2),
    "entity in plain text": text_xml("o-amy", "x", msg_id=17).replace("<![CDATA[x]]>", "a &amp; b &#x4F60;"),
    "carriage return in CDATA": text_xml("o-amy", "第一行\r\n第二行\r第三行", msg_id=18),
    "tag with a hyphen": text_xml("o-amy", "hi", msg_id=19).replace("</xml>", "<X-Y>1</X-Y></xml>"),
    "whitespace before the root": "\n" + text_xml("o-amy", "hi", msg_id=24),
    "empty element": text_xml("o-amy", "hi", msg_id=25).replace("</xml>", "<Extra/></xml>"),
    "subscribe by QR": event_xml("o-amy", "subscribe", {"EventKey": "qrscene_store-1", "Ticket": "t"}),
    "scan product": event_xml("o-amy", "subscribe", {"EventKey": "scanbarcode|123"}),
    "click": event_xml("o-amy", "CLICK", {"EventKey": "MENU_NEW"}),
    "nested element": text_xml("o-amy", "hi", msg_id=20).replace("</xml>", "<Extra><A>1</A></Extra></xml>"),
    "repeated element": text_xml("o-amy", "hi", msg_id=21).replace("</xml>", "<MsgId>22</MsgId></xml>"),
    "attribute": text_xml("o-amy", "hi", msg_id=23).replace("<Content>", '<Content lang="zh">'),
}


def same(ours: object, theirs: object) -> None:
    assert type(ours) is type(theirs)
    assert dict(ours._data) == dict(theirs._data)  # type: ignore[attr-defined]
    assert ours.source == theirs.source and ours.id == theirs.id  # type: ignore[attr-defined]


@pytest.mark.parametrize("xml", PLAIN.values(), ids=PLAIN.keys())
def test_plain_messages_read_quickly_are_what_wechatpy_reads(xml):
    assert _plain_message_fields(xml) is not None  # the quick reader took it
    same(parse_callback(xml), parse_message(xml))


@pytest.mark.parametrize("xml", OTHER.values(), ids=OTHER.keys())
def test_events_and_unusual_shapes_are_read_by_wechatpy_itself(xml):
    assert _plain_message_fields(xml) is None
    same(parse_callback(xml), parse_message(xml))


@pytest.mark.parametrize("xml", [
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]><xml><MsgType>&b;</MsgType></xml>',
    "<xml><ToUserName>unclosed",
    "<notxml><MsgType>text</MsgType></notxml>",
    text_xml("o-amy", "控制字符\x01", msg_id=30),
    text_xml("o-amy", "hi", msg_id=31).replace("</Content>", "</Contents>"),
    text_xml("o-amy", "hi", msg_id=32) + "<xml></xml>",
])
def test_what_wechatpy_refuses_is_still_refused(xml):
    with pytest.raises(Exception):  # noqa: B017 - whatever wechatpy raises: the callback answers 400
        parse_message(xml)
    with pytest.raises(Exception):  # noqa: B017
        parse_callback(xml)


@pytest.mark.parametrize("text", ["营业时间 10:00–22:00", "代码 <b>x</b> & ]]> 结束", ""])
def test_the_passive_reply_is_what_wechatpy_renders(text):
    ours = passive_text_reply(to_user="o-amy", from_user="gh_siyu", content=text, created=1_700_000_000)
    theirs = TextReply(source="gh_siyu", target="o-amy", content=_cdata(text), time=1_700_000_000).render()
    assert ours == theirs
    reply = parse_message(ours)  # and WeChat reads back the words that were sent
    assert (reply.content or "") == text and reply.source == "gh_siyu" and reply.target == "o-amy"
