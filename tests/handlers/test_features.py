import numpy as np

from handlers.nlu.engine import NONE_LABEL
from handlers.nlu.eval import NONE_LABEL as EVAL_NONE_LABEL
from handlers.nlu.features import TfidfBlocks, char_ngrams


def test_hand_built_vector_equals_fitted_transform() -> None:
    texts = ["我有多少积分", "积分积分怎么兑换", "退货 退款", "几点开门"]
    blocks = TfidfBlocks([char_ngrams(1), char_ngrams(2), str.split], weights=(1.0, 0.5, 0.7))
    matrix = blocks.fit_transform(texts).toarray()
    for row, text in zip(matrix, texts):
        columns, values = blocks.vector(text)
        rebuilt = np.zeros_like(row)
        rebuilt[columns] = values
        np.testing.assert_allclose(rebuilt, row, rtol=1e-5, atol=1e-6)


def test_unknown_text_has_no_features() -> None:
    blocks = TfidfBlocks([char_ngrams(1), char_ngrams(2)])
    blocks.fit_transform(["积分", "退款"])
    columns, values = blocks.vector("qwerty")
    assert len(columns) == len(values) == 0


def test_char_ngrams_mark_start_and_end_and_skip_spaces() -> None:
    assert char_ngrams(2)("查 积分") == ["^查", "积分", "分$"]
    assert char_ngrams(1)("查 积") == ["查", "积"]


def test_none_label_is_shared() -> None:
    assert NONE_LABEL == EVAL_NONE_LABEL == "none"
