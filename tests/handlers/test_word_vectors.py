import gzip
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest

from handlers.nlu import word_vectors
from handlers.nlu.engine import IntentEngine
from handlers.nlu.settings import IntentSpec, NluSettings
from handlers.nlu.word_vectors import VECTOR_SIZE, WordVectors, load_word_vectors


def unit(*hot: int) -> np.ndarray:
    vector = np.zeros(VECTOR_SIZE, dtype=np.float16)
    vector[list(hot)] = 1.0
    return vector


def test_vector_sums_known_words_to_unit_length() -> None:
    vectors = WordVectors(["菜谱", "红烧肉"], np.array([unit(3), unit(3, 7)]))
    vector = vectors.vector(["红烧肉", "怎么", "菜谱"])
    assert vector is not None and vector.shape == (VECTOR_SIZE,)
    assert set(np.flatnonzero(vector)) == {3, 7} and vector[3] == 2 * vector[7]
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, rtol=1e-6)


def test_unknown_word_is_read_from_its_characters() -> None:
    vectors = WordVectors(["排", "骨", "天气"], np.array([unit(1), unit(2), unit(3)]))
    vector = vectors.vector(["排骨", "天气"])
    assert vector is not None
    # The two characters together weigh as much as the one known word.
    assert vector[1] == vector[2] and vector[3] == 2 * vector[1]
    assert vectors.vector(["qwerty"]) is None


def test_shipped_vectors_relate_words_no_example_shares() -> None:
    vectors = load_word_vectors()
    assert vectors is not None and len(vectors) > 50_000

    def dense(word: str) -> np.ndarray:
        vector = vectors.vector([word])
        assert vector is not None
        return vector

    assert dense("航班") @ dense("机票") > 0.4 > dense("航班") @ dense("红烧肉")


def test_few_examples_recognise_words_only_the_vectors_relate() -> None:
    intents = [
        IntentSpec(name="flight", reply="-",
                   examples=["帮我订一张机票", "查一下机票价格", "明天飞北京的飞机", "我要坐飞机去上海"]),
        IntentSpec(name="cookbook", reply="-",
                   examples=["红烧肉怎么做", "教我做个菜", "这道菜的做法", "鸡蛋怎么炒好吃"]),
        IntentSpec(name="music", reply="-",
                   examples=["放一首歌", "我想听歌", "来点音乐", "播放周杰伦的歌"]),
        IntentSpec(name="weather", reply="-",
                   examples=["今天天气怎么样", "明天会下雨吗", "北京气温多少度", "要不要带伞"]),
    ]
    engine = IntentEngine.build(intents, [], NluSettings())
    # No example sings or has a 曲子; without word vectors this went to cookbook (个 as in 做个菜).
    sung = engine.match("唱个曲子")
    assert sung is not None and sung.intent == "music"
    flight = engine.match("查查航班")  # 航班 is in no example; 查 is in three intents
    assert flight is not None and flight.intent == "flight" and flight.confidence > 0.8


def fake_package(root: Path, lines: list[str]) -> None:
    model = root / "fake_vectors_pkg" / "model"
    model.mkdir(parents=True)
    (root / "fake_vectors_pkg" / "__init__.py").write_text("raise ImportError('never imported')\n")
    with gzip.open(model / "test.model", "wb") as out:
        pickle.dump((lines, {}, {}), out)


def test_data_file_is_converted_once_then_read_from_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_package(tmp_path / "site", ["甲 " + " ".join(["1.0"] * VECTOR_SIZE),
                                     "乙 " + " ".join(["0.0"] * VECTOR_SIZE)])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(word_vectors, "_PACKAGE", "fake_vectors_pkg")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    converted = load_word_vectors.__wrapped__()
    assert converted is not None and len(converted) == 2
    assert list((tmp_path / "cache" / "siyu").glob("word-vectors-*.npz"))
    # Centred on the mean of all words: 乙, all zeros in the file, points away from 甲.
    first, second = converted.vector(["甲"]), converted.vector(["乙"])
    assert first is not None and second is not None and first[0] > 0 > second[0]
    # The second read comes from the cache: it survives the data file's pickle going bad.
    monkeypatch.setattr(word_vectors, "_read_model", lambda _path: pytest.fail("re-converted"))
    cached = load_word_vectors.__wrapped__()
    assert cached is not None
    again = cached.vector(["乙"])
    assert again is not None and np.array_equal(again, second)


def test_missing_package_degrades_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(word_vectors, "_PACKAGE", "no_such_vectors_package")
    with caplog.at_level(logging.WARNING, logger=word_vectors.__name__):
        assert load_word_vectors.__wrapped__() is None
    assert "word vectors not found" in caplog.text
