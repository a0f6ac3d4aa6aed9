"""Evaluation judges of the generation benchmark: what the reported figures are measured with.

They are kept apart from the *training* judges (:mod:`.generate_judges`: the Flesch-Kincaid
formula written here and the MiniLM nearest-centroid friendliness classifier), which make the
simulated users' labels: a method is never scored by the judge its users' preferences came from.
Each evaluation judge is a well-kept library or a plain count, independent of the LM being steered:

- readability by ``textstat`` (several formulas: Flesch-Kincaid grade, Gunning fog, Coleman-Liau,
  automated readability index, Dale-Chall), with their mean as ``readability_grade``; only
  answers long enough to measure (``min_words``, default 60, about 96 tokens) get a grade, the
  others ``None``;
- sentiment (the friendliness axis) by VADER (``vaderSentiment``): the compound score in [-1, 1];
- informativeness: content words (words not in a stop list, letters only) and distinct facts, the
  number of sentences that bring at least two content words no earlier sentence had.

Fluency (perplexity under the base LM) and relevance (MiniLM cosine of prompt and answer) need
models; :func:`relevance` takes an encoder and :func:`perplexity` an LM, so that the caller loads
them once. :class:`EvaluationJudges` holds both and measures a batch of answers with every judge.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..extras import require

READABILITY_FORMULAS = (
    "flesch_kincaid_grade",
    "gunning_fog",
    "coleman_liau_index",
    "automated_readability_index",
    "dale_chall_readability_score",
)

#: common English function words: what "content word" leaves out
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its itself
    just let me more most my myself no nor not now of off on once only or other our ours ourselves
    out over own same she should so some such than that the their theirs them themselves then there
    these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves also may might must shall
    one two get got like well really much many even still yes ok okay""".split()
)

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def content_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` that are not stop words (letters and apostrophes only)."""
    return [w for w in (m.lower() for m in _WORD.findall(text)) if w not in STOP_WORDS]


def distinct_facts(text: str) -> int:
    """Sentences that bring at least two content words no earlier sentence of ``text`` had."""
    seen: set[str] = set()
    facts = 0
    for sentence in _SENTENCE.split(text.strip()):
        new = set(content_words(sentence)) - seen
        if len(new) >= 2:
            facts += 1
        seen |= new
    return facts


def readability(text: str, *, min_words: int = 60) -> dict[str, float] | None:
    """Grades of ``text`` by each textstat formula and their mean (``readability_grade``), or
    None when the text has fewer than ``min_words`` words (a grade of a few words is noise)."""
    if len(_WORD.findall(text)) < min_words:
        return None
    textstat = require("textstat", "bench", "readability judges")
    grades = {name: float(getattr(textstat, name)(text)) for name in READABILITY_FORMULAS}
    grades["readability_grade"] = float(np.mean(list(grades.values())))
    return grades


class SentimentJudge:
    """VADER's compound sentiment score in [-1, 1] (one analyzer, loaded once)."""

    def __init__(self) -> None:
        vader = require("vaderSentiment.vaderSentiment", "bench", "the sentiment judge")
        self._analyzer = vader.SentimentIntensityAnalyzer()

    def __call__(self, text: str) -> float:
        return float(self._analyzer.polarity_scores(text)["compound"])


def relevance(
    encode: Callable[[Sequence[str]], np.ndarray], prompts: Sequence[str], answers: Sequence[str]
) -> np.ndarray:
    """Cosine similarity of each prompt and its answer under ``encode`` (e.g. MiniLM)."""
    if len(prompts) != len(answers):
        raise ValueError("one answer per prompt")
    p = np.asarray(encode(list(prompts)), dtype=np.float64)
    a = np.asarray(encode(list(answers)), dtype=np.float64)
    norm = np.linalg.norm(p, axis=1) * np.linalg.norm(a, axis=1)
    return np.asarray((p * a).sum(axis=1) / np.maximum(norm, 1e-12))


def perplexity(token_logprobs: Sequence[float]) -> float:
    """``exp(-mean log p)`` of an answer's tokens under the base LM (the caller scores them)."""
    if not len(token_logprobs):
        return math.nan
    return float(math.exp(-float(np.mean(token_logprobs))))


def judge_answer(text: str, sentiment: SentimentJudge, *, min_words: int = 60) -> dict[str, Any]:
    """Every model-free evaluation judge of one answer."""
    words = content_words(text)
    return {
        "words": len(_WORD.findall(text)),
        "content_words": len(words),
        "distinct_content_words": len(set(words)),
        "distinct_facts": distinct_facts(text),
        "sentiment": sentiment(text),
        "readability": readability(text, min_words=min_words),
    }


#: what :meth:`EvaluationJudges.measure` returns per answer (``logprob``: the mean token
#: log-probability of the answer under the base LM and the neutral prompt; perplexity is its
#: ``exp(-x)``)
MEASURES = (
    "readability_grade",
    "sentiment",
    "content_words",
    "distinct_facts",
    "words",
    "relevance",
    "logprob",
)


class EvaluationJudges:
    """Every evaluation judge, loaded once: the model-free ones (:func:`judge_answer`), relevance
    under ``encoder`` (an object with ``embed(texts)``, e.g. persona_engine's ``minilm``) and fluency
    under the base ``lm`` prompted with ``neutral_prompt`` over the first ``max_tokens`` tokens."""

    def __init__(
        self,
        lm: Any,
        neutral_prompt: str,
        encoder: Any,
        *,
        max_tokens: int,
        min_words: int = 60,
    ) -> None:
        self.lm, self.neutral_prompt, self.encoder = lm, neutral_prompt, encoder
        self.max_tokens, self.min_words = max_tokens, min_words
        self.sentiment = SentimentJudge()

    def measure(self, prompts: Sequence[str], answers: Sequence[str]) -> dict[str, np.ndarray]:
        """``{measure: (n,)}`` for the ``n`` answers (NaN where a judge has no value: readability
        of a short answer, fluency of an empty one)."""
        from persona_engine_drift.rewards import score_answers

        if len(prompts) != len(answers):
            raise ValueError("one answer per prompt")
        n = len(answers)
        out = {m: np.full(n, np.nan) for m in MEASURES}
        if not n:
            return out
        for i, text in enumerate(answers):
            judged = judge_answer(text, self.sentiment, min_words=self.min_words)
            grade = judged["readability"]
            out["readability_grade"][i] = math.nan if grade is None else grade["readability_grade"]
            for m in ("sentiment", "content_words", "distinct_facts", "words"):
                out[m][i] = float(judged[m])
        filled = [t if t.strip() else "." for t in answers]
        out["relevance"] = relevance(self.encoder.embed, prompts, filled)
        lp, _, _ = score_answers(
            self.lm, [self.neutral_prompt], prompts, filled, max_tokens=self.max_tokens
        )
        out["logprob"] = np.where(
            [bool(t.strip()) for t in answers], lp[0].astype(np.float64), np.nan
        )
        return out
