import pytest

from handlers.typed_answers import (
    NOT_AN_ANSWER,
    parse_answer,
    parse_choice,
    parse_nps,
    parse_order_number,
    parse_phone,
    parse_rating,
    parse_text,
    parse_yes_no,
)


@pytest.mark.parametrize(("text", "value"), [
    ("5", 5), ("５", 5), ("4分", 4), ("打3分吧", 3), ("五星", 5), ("三颗星", 3), ("⭐⭐⭐", 3),
    ("非常满意", 5), ("满意", 4), ("一般", 3), ("不太满意", 2), ("很不满意", 1), ("非常不滿意", 1),
])
def test_rating(text: str, value: int) -> None:
    assert parse_rating(text) == value


@pytest.mark.parametrize("text", ["6", "0", "你好", "", "我想查订单"])
def test_rating_not_an_answer(text: str) -> None:
    assert parse_rating(text) is NOT_AN_ANSWER


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("9", 9), ("10分", 10), ("十", 10), ("七分", 7), ("满分", 10),
])
def test_nps(text: str, value: int) -> None:
    assert parse_nps(text) == value


@pytest.mark.parametrize("text", ["11", "-1", "不知道", "推荐"])
def test_nps_not_an_answer(text: str) -> None:
    assert parse_nps(text) is NOT_AN_ANSWER


@pytest.mark.parametrize(("text", "value"), [
    ("好的", True), ("嗯嗯", True), ("可以啊", True), ("OK", True), ("是", True), ("👍", True),
    ("不用了", False), ("不要", False), ("算了吧", False), ("暂时不要", False), ("不", False),
    ("不了谢谢", False),
])
def test_yes_no(text: str, value: bool) -> None:
    assert parse_yes_no(text) is value


def test_yes_no_not_an_answer() -> None:
    assert parse_yes_no("你们几点开门") is NOT_AN_ANSWER
    assert not NOT_AN_ANSWER  # falsy, but distinct from False


@pytest.mark.parametrize(("text", "value"), [
    ("2", "蓝色"), ("第二个", "蓝色"), ("B", "蓝色"), ("红色", "红色"), ("我要白色的", "白色"),
])
def test_choice(text: str, value: str) -> None:
    assert parse_choice(text, ["红色", "蓝色", "白色"]) == value


@pytest.mark.parametrize("text", ["5", "第五个", "绿色", "随便"])
def test_choice_not_an_answer(text: str) -> None:
    assert parse_choice(text, ["红色", "蓝色", "白色"]) is NOT_AN_ANSWER


def test_phone() -> None:
    assert parse_phone("138 0013 8000") == "13800138000"
    assert parse_phone("+86-13800138000") == "13800138000"
    assert parse_phone("我的手机是13800138000") == "13800138000"
    assert parse_phone("12345") is NOT_AN_ANSWER
    assert parse_phone("13800138000 或 13900139000") is NOT_AN_ANSWER


def test_order_number() -> None:
    assert parse_order_number("A1001") == "A1001"
    assert parse_order_number("订单号：2024 1123 0001") == "202411230001"
    assert parse_order_number("单号是sf1234567890") == "SF1234567890"
    assert parse_order_number("我的订单") is NOT_AN_ANSWER
    assert parse_order_number("13800138000") is NOT_AN_ANSWER


def test_text() -> None:
    assert parse_text("  挺好的，下次还买  ") == "挺好的，下次还买"
    assert parse_text("  ") is NOT_AN_ANSWER
    assert parse_text("。。。") is NOT_AN_ANSWER


def test_dispatch_by_kind() -> None:
    assert parse_answer("rating", "五星") == 5
    assert parse_answer("choice", "1", ["到店", "快递"]) == "到店"
    with pytest.raises(ValueError):
        parse_answer("colour", "红")  # type: ignore[arg-type]
