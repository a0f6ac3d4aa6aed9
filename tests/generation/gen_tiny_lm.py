"""A tiny causal LM and word-level tokenizer built in code, trained in seconds on a grammar whose
system tokens steer known attributes (colour, sentiment, length), so tests know the right answer.

Sentences: ``<system> describe a thing : the <colour> <noun> is very^n <adjective> . <eos>``.
Under ``sys_neutral`` colour, adjective and n are uniform; ``sys_red``/``sys_blue`` make that
colour 90% likely, ``sys_pos``/``sys_neg`` the adjective good/bad, ``sys_short``/``sys_long``
n = 0 / n = 3.
"""

from __future__ import annotations

import random
import re

COLOURS = ["red", "blue", "green"]
NOUNS = ["car", "ball", "cup"]
ADJECTIVES = ["good", "bad"]
SYSTEMS = ["sys_neutral", "sys_red", "sys_blue", "sys_pos", "sys_neg", "sys_short", "sys_long"]
PROMPT = "describe :"
WORDS = [
    "<pad>",
    "<unk>",
    "<eos>",
    *SYSTEMS,
    "describe",
    "a",
    "thing",
    ":",
    "the",
    *COLOURS,
    *NOUNS,
    "is",
    "very",
    *ADJECTIVES,
    ".",
]


def make_tokenizer(words: list[str] | None = None):
    """The word-level tokenizer of :data:`WORDS` (or of ``words``: another vocabulary)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(words or WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(
        prefix="##", cleanup=False
    )  # joins words with spaces, keeps " ."
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


def sample_response(rng: random.Random, system: str) -> str:
    colour = rng.choice(COLOURS)
    if system in ("sys_red", "sys_blue") and rng.random() < 0.9:
        colour = system[4:]
    adjective = rng.choice(ADJECTIVES)
    if system in ("sys_pos", "sys_neg") and rng.random() < 0.9:
        adjective = "good" if system == "sys_pos" else "bad"
    n = rng.randrange(4)
    if system in ("sys_short", "sys_long") and rng.random() < 0.9:
        n = 0 if system == "sys_short" else 3
    return " ".join(["the", colour, rng.choice(NOUNS), "is", *(["very"] * n), adjective, "."])


def train_tiny_lm(
    seed: int = 0, steps: int = 300, batch: int = 64, hidden: int = 64, lr: float = 1e-3
):
    """(model, tokenizer): a 2-layer Llama that follows the grammar above."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=2,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    rng = random.Random(seed)
    eos = tokenizer.eos_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        rows = []
        for _ in range(batch):
            system = rng.choice(SYSTEMS)
            rows.append(
                tokenizer(f"{system} {PROMPT} {sample_response(rng, system)}")["input_ids"] + [eos]
            )
        length = max(len(r) for r in rows)
        ids = torch.tensor([r + [0] * (length - len(r)) for r in rows])
        labels = ids.masked_fill(ids == 0, -100)
        loss = model(input_ids=ids, attention_mask=(ids != 0).long(), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, tokenizer


def rates(texts: list[str]) -> dict[str, float]:
    """Measured attributes of tiny-grammar texts (the known right answers)."""
    n = max(len(texts), 1)
    words = [re.findall(r"[a-z_]+", t) for t in texts]
    return {
        "red": sum("red" in w for w in words) / n,
        "blue": sum("blue" in w for w in words) / n,
        "good": sum("good" in w for w in words) / n,
        "bad": sum("bad" in w for w in words) / n,
        "very": sum(w.count("very") for w in words) / n,
        "fluent": sum(t.strip().endswith(".") for t in texts) / n,
    }


def grammar_responses(system: str, n: int, seed: int = 0) -> list[str]:
    """Sentences of the grammar as ``system`` would steer them (no LM involved)."""
    rng = random.Random(seed)
    return [sample_response(rng, system) for _ in range(n)]
