import json
from pathlib import Path

import pytest

from handlers.nlu.eval import (
    EvalError,
    Example,
    load_examples,
    sample_shots,
    score_predictions,
)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    from bot.cli.main import main

    try:
        code = main(list(argv))
    except SystemExit as stop:
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_small_fixture_figures(capsys, fixtures: Path) -> None:
    code, out, err = _run(capsys, "nlu", "eval", "--train", str(fixtures / "small_train.tsv"),
                          "--test", str(fixtures / "small_test.tsv"), "--json")
    assert code == 0
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["examples"] == 12
    assert figures["accuracy"] == 1.0
    assert figures["macro_f1"] == 1.0
    assert figures["per_intent"]["none"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 3}
    assert figures["p99_ms"] > 0
    assert "accuracy" in out and "macro-F1" in out and "p99" in out
    assert "evaluating 12 messages" in err


def test_eval_with_shots_is_reproducible(capsys, fixtures: Path) -> None:
    args = ["nlu", "eval", "--train", str(fixtures / "small_train.tsv"),
            "--test", str(fixtures / "small_test.tsv"), "--shots", "3", "--seed", "2", "--json"]
    first = json.loads(_run(capsys, *args)[1].strip().splitlines()[-1])
    second = json.loads(_run(capsys, *args)[1].strip().splitlines()[-1])
    assert first["train_examples"] == 12
    assert (first["shots"], first["seed"]) == (3, 2)
    assert first["accuracy"] == second["accuracy"]


def test_eval_config(capsys, fixtures: Path, example_config: Path) -> None:
    code, out, _ = _run(capsys, "nlu", "eval", "--config", str(example_config),
                        "--test", str(fixtures / "retail_test.tsv"), "--json")
    assert code == 0
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["examples"] == 80
    assert figures["accuracy"] >= 0.9
    assert figures["per_intent"]["none"]["recall"] >= 0.8


def test_eval_help_explains_files(capsys) -> None:
    code, out, _ = _run(capsys, "nlu", "eval", "--help")
    assert code == 0
    assert "label<TAB>text" in out and "--shots" in out and "none" in out


def test_bad_file_is_one_clear_line(capsys, tmp_path: Path, fixtures: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("intent\tmessage\nx\ty\n", encoding="utf-8")
    code, _, err = _run(capsys, "nlu", "eval", "--train", str(bad),
                        "--test", str(fixtures / "small_test.tsv"))
    assert code == 2
    assert f"{bad}:1: expected the header" in err


def test_load_examples_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("label\ttext\na\tfine\nmissing-text\n", encoding="utf-8")
    with pytest.raises(EvalError, match=r"t.tsv:3: expected"):
        load_examples(path)


def test_sample_shots_keeps_k_per_label() -> None:
    examples = [Example(label, f"{label}{i}") for label in "ab" for i in range(10)] + [Example("c", "c0")]
    kept = sample_shots(examples, 3, seed=1)
    assert sorted(e.label for e in kept) == ["a"] * 3 + ["b"] * 3 + ["c"]
    assert kept == sample_shots(examples, 3, seed=1)
    assert kept != sample_shots(examples, 3, seed=2)


def test_scores_known_figures() -> None:
    report = score_predictions(["a", "a", "b", "none"], ["a", "b", "b", "a"], [0.001] * 4)
    assert report.accuracy == 0.5
    assert report.per_label["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert report.per_label["b"]["precision"] == 0.5 and report.per_label["b"]["recall"] == 1.0
    assert report.per_label["none"]["recall"] == 0.0
    assert report.macro_f1 == pytest.approx((0.5 + 2 / 3 + 0.0) / 3, abs=1e-4)
    assert report.confused[0][2] == 1
