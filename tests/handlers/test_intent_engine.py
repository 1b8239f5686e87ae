import pytest
from pydantic import ValidationError

from bot.config.settings import load_settings
from handlers.matching import Action, Matcher
from handlers.nlu.engine import IntentEngine, build_matcher
from handlers.nlu.settings import FaqEntry, IntentSpec, NluSettings

POINTS = ["我有多少积分", "查一下积分", "积分还剩多少", "我的积分是多少", "积分余额", "帮我查下积分"]
REFUND = ["我要退货", "怎么退款", "申请退款", "退货退款", "不想要了能退吗", "退款多久到账"]
OUT_OF_SCOPE = ["今天天气怎么样", "给我讲个笑话", "帮我写首诗", "你叫什么名字"]


@pytest.fixture(scope="module")
def engine() -> IntentEngine:
    intents = [
        IntentSpec(name="points", examples=POINTS, reply="您有 {points} 积分"),
        IntentSpec(name="refund", examples=REFUND, action=Action.FLOW, flow="refund_flow"),
        IntentSpec(name="human", keywords=["人工"], priority=20, action=Action.HANDOFF),
        IntentSpec(name="complaint", keywords=["投诉"], priority=10, action=Action.HANDOFF,
                   reply="抱歉，马上为您转接"),
        IntentSpec(name="vip", exact=["vip"], regex=[r"^会员\d+$"], reply="会员专属"),
    ]
    faq = [FaqEntry(name="invoice", questions=["可以开发票吗", "怎么开发票"], answer="订单详情里申请开票")]
    return IntentEngine.build(intents, faq, NluSettings(out_of_scope=OUT_OF_SCOPE))


def test_engine_is_a_matcher(engine: IntentEngine) -> None:
    matcher: Matcher = engine
    assert matcher.match("") is None


def test_classifier_recognises_paraphrase_and_traditional(engine: IntentEngine) -> None:
    match = engine.match("我的積分還有多少？")
    assert match is not None
    assert (match.intent, match.source, match.reply) == ("points", "classifier", "您有 {points} 积分")
    assert 0.0 < match.confidence <= 1.0


def test_flow_intent_carries_its_flow(engine: IntentEngine) -> None:
    match = engine.match("我想退款")
    assert match is not None
    assert (match.intent, match.action, match.flow, match.reply) == ("refund", Action.FLOW,
                                                                     "refund_flow", None)


def test_higher_priority_rule_wins(engine: IntentEngine) -> None:
    match = engine.match("我要投诉，转人工")
    assert match is not None
    assert (match.intent, match.source, match.confidence) == ("human", "rule", 1.0)
    assert engine.match("我要投诉").intent == "complaint"  # type: ignore[union-attr]


def test_rules_beat_the_classifier(engine: IntentEngine) -> None:
    assert engine.match("积分的事我要投诉").intent == "complaint"  # type: ignore[union-attr]


def test_exact_and_regex_rules_see_normalised_text(engine: IntentEngine) -> None:
    assert engine.match("ＶＩＰ！").intent == "vip"  # type: ignore[union-attr]
    assert engine.match("会员123").intent == "vip"  # type: ignore[union-attr]
    assert engine.match("我是vip吗") is None or engine.match("我是vip吗").intent != "vip"  # type: ignore[union-attr]


def test_faq_answers_when_no_intent_is_sure(engine: IntentEngine) -> None:
    match = engine.match("开发票怎么弄")
    assert match is not None
    assert (match.intent, match.source, match.reply) == ("faq:invoice", "faq", "订单详情里申请开票")


@pytest.mark.parametrize("text", ["今天天气怎么样", "帮我写首诗", "asdfgh", "😂😂", "！！！"])
def test_out_of_scope_falls_back(engine: IntentEngine, text: str) -> None:
    assert engine.match(text) is None


def test_single_intent_matches_by_similarity() -> None:
    engine = build_matcher([IntentSpec(name="points", examples=POINTS, reply="积分")], [], NluSettings())
    assert engine.match("查积分余额").intent == "points"  # type: ignore[union-attr]
    assert engine.match("今天天气怎么样") is None


def test_empty_settings_build_a_matcher_that_knows_nothing() -> None:
    assert IntentEngine.build([], [], NluSettings()).match("你好") is None


def test_example_config_answers_retail_questions(example_config) -> None:
    settings = load_settings(example_config)
    engine = IntentEngine.build(settings.intents, settings.faq, settings.nlu)
    expectations = {
        "我积分还有多少": "points_query", "积分能换什么": "points_redeem", "转人工": "human_agent",
        "快递到哪了": "order_status", "我想退货": "return_refund", "谢谢啦": "thanks",
        "退订": "unsubscribe", "你们门店在哪": "store_info", "你好": "greeting",
    }
    for text, intent in expectations.items():
        match = engine.match(text)
        assert match is not None and match.intent == intent, text
    for text in ["今天天气怎么样", "帮我写首诗", "asdfgh"]:
        assert engine.match(text) is None, text


@pytest.mark.parametrize(("fields", "message"), [
    ({"name": "x", "examples": ["a"], "action": "flow"}, "names no flow"),
    ({"name": "x", "examples": ["a"], "reply": "r", "flow": "f"}, 'set action = "flow"'),
    ({"name": "x", "examples": ["a"]}, "no reply text"),
    ({"name": "x", "reply": "r"}, "can never match"),
    ({"name": "x", "regex": ["(unclosed"], "reply": "r"}, "invalid regular expression"),
    ({"name": "none", "examples": ["a"], "reply": "r"}, "reserved"),
    ({"name": "x", "examples": ["a"], "reply": "r", "replies": ["r"]}, "Extra inputs"),
    ({"name": "积分", "examples": ["a"], "reply": "r"}, "should match pattern"),
])
def test_intent_validation(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        IntentSpec(**fields)


def test_handoff_needs_no_reply() -> None:
    assert IntentSpec(name="human", keywords=["人工"], action="handoff").reply is None


def test_nlu_settings_validation() -> None:
    assert NluSettings().threshold == 0.25
    with pytest.raises(ValidationError, match="less than or equal"):
        NluSettings(threshold=1.5)
    with pytest.raises(ValidationError, match="listed under both"):
        NluSettings(synonyms={"积分": ["分"], "分数": ["分"]})
    with pytest.raises(ValidationError, match="Extra inputs"):
        NluSettings(treshold=0.3)


def test_long_message_is_scored_on_its_start(engine: IntentEngine) -> None:
    match = engine.match("我的积分还剩多少" + "。" * 5 + "啊" * 5000)
    assert match is not None and match.intent == "points"


def test_one_intent_with_out_of_scope_examples() -> None:
    engine = build_matcher([IntentSpec(name="points", examples=POINTS, reply="积分")], [],
                           NluSettings(out_of_scope=OUT_OF_SCOPE))
    match = engine.match("我的积分余额多少")
    assert match is not None and match.intent == "points" and match.confidence > 0.5
    assert engine.match("今天天气怎么样") is None
