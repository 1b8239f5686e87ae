"""`siyu nlu eval`: measure the intent matcher on labelled messages (accuracy, F1, latency)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from bot.config.settings import ConfigError, load_settings
from handlers.nlu.eval import (
    NONE_LABEL,
    EvalError,
    build_from_examples,
    evaluate,
    format_report,
    load_examples,
    sample_shots,
)
from handlers.nlu.settings import FaqEntry, IntentSpec, NluSettings


def run_eval(args: argparse.Namespace) -> int:
    try:
        return _run_eval(args)
    except EvalError as error:
        print(f"siyu nlu eval: {error}", file=sys.stderr)
        return 2


def _run_eval(args: argparse.Namespace) -> int:
    if bool(args.train) == bool(args.config):
        raise EvalError("give exactly one of --train or --config")
    test = load_examples(args.test)
    overrides: dict[str, float] = {}
    started = time.perf_counter()
    if args.train:
        train = load_examples(args.train)
        if not any(e.label == NONE_LABEL for e in (*train, *test)):
            # Every message is known to belong to an intent: measure the pure classifier, not
            # how often the threshold would make it ask again.
            overrides = {"threshold": 0.0, "margin": 0.0}
            print("no 'none' labels: measuring without threshold and margin "
                  "(set them with --threshold/--margin)", file=sys.stderr)
        if args.shots:
            train = sample_shots(train, args.shots, args.seed)
        overrides |= _explicit(args)
        print(f"building from {len(train)} examples of "
              f"{len({e.label for e in train})} labels …", file=sys.stderr, flush=True)
        matcher = build_from_examples(train, NluSettings().model_copy(update=overrides))
        train_size = len(train)
    else:
        intents, faq, nlu = _load_config(args.config)
        overrides = _explicit(args)
        print(f"building {len(intents)} intents and {len(faq)} FAQ entries from {args.config} …",
              file=sys.stderr, flush=True)
        from handlers.nlu.engine import IntentEngine

        matcher = IntentEngine.build(intents, faq, nlu.model_copy(update=overrides))
        train_size = sum(len(i.examples) for i in intents)
    build_s = time.perf_counter() - started
    print(f"evaluating {len(test)} messages …", file=sys.stderr, flush=True)
    report = evaluate(matcher, test, progress=len(test) >= 500)
    report.build_s = build_s
    report.train_examples = train_size
    if args.shots:
        report.extra.update(shots=args.shots, seed=args.seed)
    print(format_report(report))
    if args.json:
        print(json.dumps(report.as_json(), ensure_ascii=False))
    return 0


def _explicit(args: argparse.Namespace) -> dict[str, float]:
    return {k: v for k, v in (("threshold", args.threshold), ("margin", args.margin))
            if v is not None}


def _load_config(path: str) -> tuple[list[IntentSpec], list[FaqEntry], NluSettings]:
    try:
        settings = load_settings(path)
    except ConfigError as error:
        raise EvalError(str(error)) from None
    return list(settings.intents), list(settings.faq), settings.nlu


def add_nlu_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds `nlu eval` to the `siyu` command line."""
    nlu = subparsers.add_parser("nlu", help="intent understanding tools",
                                description="Tools for the intent matcher.")
    commands = nlu.add_subparsers(title="commands", metavar="COMMAND")
    nlu.set_defaults(func=lambda _args: (nlu.print_help(), 2)[1])
    ev = commands.add_parser(
        "eval", help="measure accuracy, F1 and latency on a labelled test file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Build the intent matcher and measure it on TEST.\n\n"
            "Either from a training file (--train; one intent per label) or from the intents\n"
            "and FAQ of a config file (--config). Files are TSV with the header\n"
            "'label<TAB>text'; the label 'none' marks a message that belongs to no intent:\n"
            "in --train it teaches out-of-scope, in --test the matcher must fall back.\n"
            "Prints accuracy, macro-F1, per-intent precision/recall/F1, the most confused\n"
            "pairs and per-message latency (p50/p99)."),
        epilog=("examples:\n"
                "  siyu nlu eval --train train.tsv --test test.tsv\n"
                "  siyu nlu eval --train train.tsv --test test.tsv --shots 10 --seed 1 --json\n"
                "  siyu nlu eval --config config.toml --test retail.tsv"))
    ev.add_argument("--train", metavar="TRAIN.tsv", help="labelled training messages")
    ev.add_argument("--config", metavar="CONFIG.toml", help="use the intents and FAQ of this config")
    ev.add_argument("--test", metavar="TEST.tsv", required=True, help="labelled test messages")
    ev.add_argument("--shots", type=_positive, metavar="K",
                    help="keep only K training examples per label (with --train)")
    ev.add_argument("--seed", type=int, default=1, help="seed for --shots sampling (default: 1)")
    ev.add_argument("--threshold", type=float,
                    help="override [nlu] threshold (0..1); with --train and no 'none' labels "
                         "anywhere the default is 0, a pure classifier")
    ev.add_argument("--margin", type=float, help="override [nlu] margin (0..1); same default rule")
    ev.add_argument("--json", action="store_true",
                    help="also print the figures as one JSON object on the last line")
    ev.set_defaults(func=run_eval)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number
