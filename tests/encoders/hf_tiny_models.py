"""Tiny Hugging Face models built in code for the ``hf`` encoder's tests: a word-level tokenizer
with a ChatML-like chat template, a 2-layer Llama causal LM and a Llama reward model (sequence
classification), saved to a folder as a user's local model would be."""

from __future__ import annotations

from pathlib import Path

WORDS = ["<pad>", "<unk>", "<eos>"] + [
    w
    for w in (
        "user assistant system what is the best colour answer red blue green it a an because "
        "i like think so very much not sure tell me about cats dogs please short long reply"
    ).split()
]
SPECIAL = ["<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tokenizer(chat_template: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS + SPECIAL)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        additional_special_tokens=SPECIAL,
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tiny_model(
    folder: Path, *, kind: str = "causal", chat_template: bool = True, seed: int = 0
) -> Path:
    """Build and save a tiny model (``kind``: "causal" or "reward") with its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    tokenizer = make_tokenizer(chat_template)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        num_labels=1,
        initializer_range=0.3,
    )
    cls = LlamaForSequenceClassification if kind == "reward" else LlamaForCausalLM
    model = cls(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
