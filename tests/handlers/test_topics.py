import numpy as np

from handlers.nlu.topics import TOPIC_COUNT, WordTopics, load_word_topics


def test_vector_sums_known_words_to_unit_length() -> None:
    topics = WordTopics({"菜谱": {"3": 0.6, "7": 0.4}, "红烧肉": {"3": 1.0}})
    indices, weights = topics.vector(["红烧肉", "怎么", "菜谱"])
    found = dict(zip(indices.tolist(), weights.tolist()))
    assert set(found) == {3, 7}
    assert found[3] > found[7]
    np.testing.assert_allclose(np.linalg.norm(weights), 1.0, rtol=1e-6)


def test_unknown_word_is_read_from_its_characters() -> None:
    topics = WordTopics({"排": {"1": 1.0}, "骨": {"2": 1.0}, "天气": {"3": 1.0}})
    indices, weights = topics.vector(["排骨", "天气"])
    found = dict(zip(indices.tolist(), weights.tolist()))
    # The two characters together weigh as much as the one known word.
    assert found[1] == found[2] and found[3] == 2 * found[1]


def test_unknown_words_have_no_topics() -> None:
    indices, weights = WordTopics({"菜谱": {"3": 1.0}}).vector(["qwerty"])
    assert len(indices) == len(weights) == 0


def test_shipped_topics_relate_words_no_example_shares() -> None:
    topics = load_word_topics()
    assert topics is not None and len(topics) > 50_000

    def dense(word: str) -> np.ndarray:
        indices, weights = topics.vector([word])
        vector = np.zeros(TOPIC_COUNT)
        vector[indices] = weights
        return vector

    # Rain is about the weather; a dish is not.
    assert dense("天气") @ dense("下雨") > 0.3 > dense("天气") @ dense("红烧肉")
