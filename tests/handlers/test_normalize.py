from handlers.nlu.normalize import Normalizer


def test_width_case_script_emoji_and_punctuation() -> None:
    normalize = Normalizer()
    assert normalize("ＶＩＰ會員 積分查詢😊！！ＡＢＣ１２３，還有嗎？👍🏻") == "vip会员 积分查询 abc123 还有吗"


def test_codes_keep_their_parts_together() -> None:
    normalize = Normalizer()
    assert normalize("TEE-01") == normalize("tee_01") == "tee01"


def test_only_decoration_normalises_to_nothing() -> None:
    assert Normalizer()("！！😂👍🏻…") == ""


def test_synonyms_rewrite_longest_variant_first() -> None:
    normalize = Normalizer({"积分": ["分数", "積分點"], "会员卡": ["vip卡"]})
    assert normalize("我的積分點呢") == "我的积分呢"
    assert normalize("分数多少") == "积分多少"
    assert normalize("VIP卡") == "会员卡"
