import numpy as np

from handlers.nlu.topics import TOPIC_COUNT, WordTopics, load_word_topics


def test_vector_sums_known_words_to_unit_length() -> None:
    topics = WordTopics({"菜谱": {"3": 0.6, "7": 0.4}, "红烧肉": {"3": 1.0}})
    vector = topics.vector(["红烧肉", "怎么", "菜谱"])
    assert vector is not None and vector.shape == (TOPIC_COUNT,)
    assert set(np.flatnonzero(vector)) == {3, 7}
    assert vector[3] > vector[7]
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, rtol=1e-6)


def test_unknown_word_is_read_from_its_characters() -> None:
    topics = WordTopics({"排": {"1": 1.0}, "骨": {"2": 1.0}, "天气": {"3": 1.0}})
    vector = topics.vector(["排骨", "天气"])
    assert vector is not None
    # The two characters together weigh as much as the one known word.
    assert vector[1] == vector[2] and vector[3] == 2 * vector[1]


def test_unknown_words_have_no_topics() -> None:
    assert WordTopics({"菜谱": {"3": 1.0}}).vector(["qwerty"]) is None


def test_shipped_topics_relate_words_no_example_shares() -> None:
    topics = load_word_topics()
    assert topics is not None and len(topics) > 50_000

    def dense(word: str) -> np.ndarray:
        vector = topics.vector([word])
        return vector if vector is not None else np.zeros(TOPIC_COUNT)

    # Rain is about the weather; a dish is not.
    assert dense("天气") @ dense("下雨") > 0.3 > dense("天气") @ dense("红烧肉")
