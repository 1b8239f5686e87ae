"""Understanding customer messages: normalisation, rules, intent classifier and FAQ retrieval.

Build with `handlers.nlu.engine.build_matcher(intents, faq, nlu)` (CPU-heavy: call it in an
executor at start-up); the result implements `handlers.matching.Matcher`. Nothing heavy is
imported here, so registering the `siyu nlu` command stays cheap.
"""
