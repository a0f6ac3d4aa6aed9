"""The generation benchmark's evaluation judges: textstat readability, VADER sentiment, content
counts, relevance and perplexity (independent of the LM and of the training judges)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persona_engine.bench import generate_judges
from persona_engine.bench.eval_judges import (
    SentimentJudge,
    content_words,
    distinct_facts,
    judge_answer,
    perplexity,
    readability,
    relevance,
)

SIMPLE = " ".join(
    [
        "The sun is hot. It gives us light. Plants need the light to grow. We can see the sun in the day."
    ]
    * 4
)
COMPLEX = " ".join(
    [
        "Photosynthetic organisms convert electromagnetic radiation into chemical energy through "
        "sophisticated biochemical mechanisms, predominantly involving chlorophyll-mediated "
        "excitation of electrons within thylakoid membranes, subsequently facilitating "
        "carbohydrate biosynthesis via the Calvin-Benson cycle."
    ]
    * 3
)


def test_readability_orders_simple_and_complex_text_by_every_formula() -> None:
    simple, complex_ = readability(SIMPLE), readability(COMPLEX)
    assert simple is not None and complex_ is not None
    for name, grade in simple.items():
        assert complex_[name] > grade + 5, name
    # a list of numbers (how a steered model once gamed Flesch-Kincaid) is too short to grade
    assert readability("1. 2. 3. 4. 5. 6. 7. 8. 9. 10.") is None
    assert readability(SIMPLE, min_words=1000) is None


def test_sentiment_by_vader() -> None:
    judge = SentimentJudge()
    assert judge("Happy to help! What a lovely question, thank you so much.") > 0.5
    assert judge("Ugh, that's a pointless and stupid question. Stop wasting my time.") < -0.5
    assert abs(judge("The boiling point of water at sea level is 100 degrees Celsius.")) < 0.2


def test_content_words_and_distinct_facts() -> None:
    assert content_words("The cat and the dog are friends.") == ["cat", "dog", "friends"]
    text = (
        "Water boils at 100 degrees. Water boils at 100 degrees. Ice melts at zero degrees celsius."
    )
    assert distinct_facts(text) == 2  # the repeated sentence adds nothing
    assert distinct_facts("1, 2, 3, 4, 5. 6, 7, 8.") == 0
    out = judge_answer(text, SentimentJudge())
    assert (
        out["distinct_facts"] == 2 and out["readability"] is None and out["words"] == 14
    )  # numbers are not words


def test_relevance_and_perplexity() -> None:
    table = {"cats": [1.0, 0.0], "about cats": [0.9, 0.1], "stocks": [0.0, 1.0]}

    def encode(texts):
        return np.array([table[t] for t in texts])

    rel = relevance(encode, ["cats", "cats"], ["about cats", "stocks"])
    assert rel[0] > 0.99 and abs(rel[1]) < 1e-9
    assert perplexity([math.log(0.5)] * 4) == pytest.approx(2.0)
    assert math.isnan(perplexity([]))


def test_evaluation_judges_are_not_the_training_judges() -> None:
    # the training judges (simulated users' labels) use their own formula and a MiniLM classifier;
    # the evaluation readability comes from textstat: the two grades differ on the same text
    ours = generate_judges.reading_grade(COMPLEX)
    theirs = readability(COMPLEX)
    assert theirs is not None and theirs["flesch_kincaid_grade"] != pytest.approx(ours, abs=1e-6)
