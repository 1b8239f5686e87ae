"""Typed answers for flow questions: a value, or NOT_AN_ANSWER so the flow can ask again."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from enum import Enum
from typing import Final, Literal

from handlers.text import Decoration, fold


class _NotAnAnswer(Enum):
    NOT_AN_ANSWER = "not an answer"

    def __bool__(self) -> bool:
        return False


# A sentinel rather than None: None is a legitimate value for nothing (e.g. an empty comment).
NOT_AN_ANSWER: Final = _NotAnAnswer.NOT_AN_ANSWER
NotAnAnswer = Literal[_NotAnAnswer.NOT_AN_ANSWER]

# 参 too: customers write the formal 3 as 參, which Simplified folding turns into 参.
_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "壹": 1, "幺": 1, "二": 2, "贰": 2, "两": 2, "俩": 2,
              "三": 3, "叁": 3, "参": 3, "四": 4, "肆": 4, "五": 5, "伍": 5, "六": 6, "陆": 6,
              "七": 7, "柒": 7, "八": 8, "捌": 8, "九": 9, "玖": 9, "十": 10, "拾": 10}


# "-1" must not read as 1 once punctuation is stripped.
_NEGATIVE = re.compile(r"[-−﹣]\s*\d")


def _drop_decoration(text: str) -> str:
    return fold(text, decoration=Decoration.DROP)


def _small_number(text: str) -> int | None:
    """0–10 written as digits or in Chinese ("七", "十", "10", "九分")."""
    if re.fullmatch(r"\d{1,2}", text):
        return int(text)
    if len(text) == 1 and text in _CN_DIGITS:
        return _CN_DIGITS[text]
    return None


# ---- rating 1–5 ----

_RATING_WORDS: tuple[tuple[int, tuple[str, ...]], ...] = (
    # Longer phrases first: "不太满意" must not be read as "满意".
    (1, ("非常不满意", "很不满意", "特别不满意", "极不满意", "太差了", "非常差", "很差", "极差",
         "差评", "垃圾", "糟糕", "烂透了")),
    (2, ("不太满意", "不满意", "不好", "较差", "比较差", "有点差", "失望")),
    (3, ("一般般", "一般", "还行", "凑合", "中评", "马马虎虎", "普通", "过得去")),
    (4, ("比较满意", "还不错", "挺好", "满意", "不错", "好评", "挺满意", "还可以", "可以")),
    (5, ("非常满意", "很满意", "特别满意", "超级满意", "十分满意", "太棒了", "非常好", "很好",
         "完美", "超赞", "五星好评", "满分")),
)


def parse_rating(text: str) -> int | NotAnAnswer:
    """A 1–5 rating: "4", "４分", "五星", "⭐⭐⭐", "非常满意", "不太满意"."""
    folded = fold(text, simplified=True)
    stars = folded.count("⭐") + folded.count("★") + folded.count("🌟")
    if stars and not _drop_decoration(folded.replace("⭐", "").replace("★", "")
                                        .replace("🌟", "")):
        return stars if 1 <= stars <= 5 else NOT_AN_ANSWER
    if _NEGATIVE.search(folded):
        return NOT_AN_ANSWER
    plain = _drop_decoration(folded)
    found = re.fullmatch(r"(?:打|给|评)?(.{1,2}?)(?:分|星|颗星|个星|星好评)?(?:吧|啊|呀)?", plain)
    if found:
        value = _small_number(found.group(1))
        if value is not None:
            return value if 1 <= value <= 5 else NOT_AN_ANSWER
    best: tuple[int, int] | None = None  # (phrase length, rating): the longest phrase wins
    for rating, phrases in _RATING_WORDS:
        for phrase in phrases:
            if phrase in plain and (best is None or len(phrase) > best[0]):
                best = (len(phrase), rating)
    return best[1] if best else NOT_AN_ANSWER


# ---- NPS 0–10 ----

def parse_nps(text: str) -> int | NotAnAnswer:
    """A 0–10 likelihood to recommend: "9", "十分", "打8分", "０"."""
    folded = fold(text, simplified=True)
    if _NEGATIVE.search(folded):
        return NOT_AN_ANSWER
    plain = _drop_decoration(folded)
    found = re.fullmatch(r"(?:打|给|评)?(.{1,2}?)(?:分|点)?(?:吧|啊|呀)?", plain)
    if not found:
        return NOT_AN_ANSWER
    value = _small_number(found.group(1))
    if value is None and found.group(1) in ("满", "满分"):
        value = 10
    return value if value is not None and 0 <= value <= 10 else NOT_AN_ANSWER


# ---- yes / no ----

_NO = ("不用了", "不用", "不需要", "不要", "不了", "不是", "不对", "不行", "不好", "算了",
       "没有", "没", "否", "取消", "拒绝", "不同意", "别", "no", "n", "nope", "不")
_YES = ("好的", "好啊", "好", "是的", "是", "对", "对的", "可以", "行", "要", "需要", "嗯",
        "嗯嗯", "确认", "确定", "同意", "没问题", "ok", "okay", "yes", "y", "好滴", "好嘞",
        "当然", "必须的", "要的", "👌", "👍")


def parse_yes_no(text: str) -> bool | NotAnAnswer:
    """True for 好的 / 是 / 可以 / ok, False for 不用了 / 不要 / 算了; else not an answer."""
    folded = fold(text, simplified=True)
    if folded in ("👌", "👍"):
        return True
    plain = _drop_decoration(folded)
    if not plain:
        return NOT_AN_ANSWER
    # A negative word anywhere in a short answer decides it ("好像不用", "暂时不要", "算了吧").
    if len(plain) <= 8 and any(word in plain for word in _NO if len(word) > 1):
        return False
    plain = re.sub(r"(吧|啊|呀|哦|哈|啦|呢)+$", "", plain) or plain
    if plain in _NO:
        return False
    if plain in _YES or (len(plain) <= 6 and any(plain.startswith(w) for w in _YES if len(w) > 1)):
        return True
    return NOT_AN_ANSWER


# ---- choice ----

def parse_choice(text: str, options: Sequence[str]) -> str | NotAnAnswer:
    """One of `options`, by its number ("2", "第二个", "B") or its text; else not an answer."""
    if not options:
        return NOT_AN_ANSWER
    plain = fold(text, decoration=Decoration.DROP, simplified=True)
    folded_options = [fold(o, decoration=Decoration.DROP, simplified=True) for o in options]
    for option, folded in zip(options, folded_options):
        if plain == folded:
            return option
    found = re.fullmatch(r"(?:选|选择|要)?(?:第)?(.{1,2}?)(?:个|项|号|种)?(?:吧|啊)?", plain)
    if found:
        token = found.group(1)
        index = _small_number(token)
        if index is None and len(token) == 1 and "a" <= token <= "z":
            index = ord(token) - ord("a") + 1
        if index is not None and 1 <= index <= len(options):
            return options[index - 1]
    # The answer contains exactly one option's text ("我要红色的").
    contained = [o for o, f in zip(options, folded_options) if f and f in plain]
    if len(contained) == 1:
        return contained[0]
    return NOT_AN_ANSWER


# ---- phone, order number, free text ----

_MOBILE = re.compile(r"(?<!\d)(?:\+?86)?(1[3-9]\d{9})(?!\d)")


def parse_phone(text: str) -> str | NotAnAnswer:
    """A mainland mobile number ("138 0013 8000", "+86-13800138000") as 11 digits."""
    digits = re.sub(r"[\s\-()]", "", fold(text))
    found = _MOBILE.findall(digits)
    return found[0] if len(found) == 1 else NOT_AN_ANSWER


_ORDER = re.compile(r"(?<![a-z0-9])([a-z]{0,4}\d[a-z0-9]{3,31})(?![a-z0-9])", re.IGNORECASE)


def parse_order_number(text: str) -> str | NotAnAnswer:
    """An order number: 5–36 letters and digits, digits after an optional letter prefix
    ("A1001", "2024 1123 0001"); a mobile number is not one."""
    folded = fold(text)
    candidates = [c for c in _ORDER.findall(re.sub(r"(?<=\w)[\s\-](?=\w)", "", folded))
                  if not _MOBILE.fullmatch(c)]
    return candidates[0].upper() if len(candidates) == 1 else NOT_AN_ANSWER


def parse_text(text: str, *, max_length: int = 500) -> str | NotAnAnswer:
    """Free text: anything with a letter, digit or Han character, trimmed and capped."""
    cleaned = text.strip()
    if not cleaned or not any(unicodedata.category(ch)[0] in "LN" for ch in cleaned):
        return NOT_AN_ANSWER
    return cleaned[:max_length]


AnswerKind = Literal["rating", "nps", "yes_no", "choice", "phone", "order_number", "text"]


def parse_answer(kind: AnswerKind, text: str, options: Sequence[str] = ()) -> object:
    """Dispatch by the flow step's `answer` kind."""
    if kind == "rating":
        return parse_rating(text)
    if kind == "nps":
        return parse_nps(text)
    if kind == "yes_no":
        return parse_yes_no(text)
    if kind == "choice":
        return parse_choice(text, options)
    if kind == "phone":
        return parse_phone(text)
    if kind == "order_number":
        return parse_order_number(text)
    if kind == "text":
        return parse_text(text)
    raise ValueError(f"unknown answer kind {kind!r}")
