"""The one text fold every comparison of customer text goes through."""

from __future__ import annotations

from handlers.text import Decoration, fold


def test_width_and_case_fold_and_the_ends_are_trimmed() -> None:
    assert fold("  ＶＩＰ　ＴＤ ") == "vip td"


def test_punctuation_and_emoji_are_kept_unless_asked_otherwise() -> None:
    assert fold("官网？⭐") == "官网?⭐"
    assert fold("转 人工！！😊", decoration=Decoration.DROP) == "转人工"
    assert fold("积分查询😊！ABC，还有吗？", decoration=Decoration.SPACE) == "积分查询 abc 还有吗"


def test_codes_keep_their_parts_together_where_decoration_becomes_space() -> None:
    assert fold("TEE-01", decoration=Decoration.SPACE) == fold("tee_01", decoration=Decoration.SPACE) == "tee01"


def test_traditional_becomes_simplified_only_when_asked() -> None:
    assert fold("會員積分", simplified=True) == "会员积分"
    assert fold("會員積分") == "會員積分"
