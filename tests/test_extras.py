"""Every command that needs an optional dependency says, in one line, which extra installs it.

``sys.modules[name] = None`` makes ``import name`` raise ImportError, as on a machine without it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from persona_engine.cli import cli
from persona_engine.extras import MissingExtraError, missing_extra_message, require

#: (command line, the module taken away, what the message names, the extra)
COMMANDS = [
    (["serve"], "uvicorn", "persona serve", "serve"),
    (["serve"], "fastapi", "persona serve", "serve"),
    (["similar", "someone"], "faiss", "persona similar", "cpu"),
    (["profile", "index"], "faiss", "persona profile index", "cpu"),
    (["train", "--finetune", "default"], "peft", "persona train --finetune", "finetune"),
    (["ppd", "train-synthetic"], "diffusers", "persona ppd train-synthetic", "images"),
    (["ppd", "onboard", "someone", "pairs.jsonl"], "diffusers", "persona ppd onboard", "images"),
    (
        ["ppd", "generate", "someone", "a red square", "--out", "images"],
        "diffusers",
        "persona ppd generate",
        "images",
    ),
]


@pytest.mark.parametrize(
    "args,module,what,extra", COMMANDS, ids=[f"{' '.join(c[0][:2])}-{c[1]}" for c in COMMANDS]
)
def test_command_names_the_missing_extra(
    args: list[str],
    module: str,
    what: str,
    extra: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)
    result = CliRunner().invoke(cli, args)
    expected = f"Error: {what} needs the '{extra}' extra: pip install 'persona-engine[{extra}]'"
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [expected + _alternative(extra)]
    assert "Traceback" not in result.output


def _alternative(extra: str) -> str:
    return " (or 'persona-engine[gpu]' on a CUDA machine)" if extra == "cpu" else ""


def test_every_command_with_an_extra_is_walked() -> None:
    """The ppd commands come from a plugin: the walk above must reach them through `persona`."""
    assert cli.get_command(None, "ppd") is not None  # type: ignore[arg-type]
    assert {extra for *_, extra in COMMANDS} >= {"serve", "cpu", "finetune", "images"}


def test_the_python_api_raises_the_same_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from persona_engine import service
    from persona_engine.retrieval.runtime import import_faiss

    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(MissingExtraError, match=r"^similar-user search needs the 'cpu' extra"):
        import_faiss()
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(MissingExtraError, match=r"^the HTTP service needs the 'serve' extra"):
        service.create_app  # noqa: B018
    monkeypatch.setitem(sys.modules, "diffusers", None)
    from persona_engine_ppd.config import TinyUNetConfig
    from persona_engine_ppd.model import build_tiny_unet

    with pytest.raises(MissingExtraError, match=r"^PPD image generation needs the 'images' extra"):
        build_tiny_unet(TinyUNetConfig())
    monkeypatch.setitem(sys.modules, "peft", None)
    from persona_engine_encoders.lora import require_peft

    with pytest.raises(MissingExtraError, match=r"^LoRA fine-tuning needs the 'finetune' extra"):
        require_peft()


def test_require_returns_the_module_when_present() -> None:
    assert require("json", "serve", "x") is sys.modules["json"]
    err = MissingExtraError("persona serve", "serve")
    assert err.code == "missing_dependency" and "\n" not in str(err)


def test_an_unknown_extra_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown extra 'nope'"):
        missing_extra_message("x", "nope")
