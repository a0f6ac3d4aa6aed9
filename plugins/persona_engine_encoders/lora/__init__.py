"""LoRA fine-tuning of the ``hf`` encoder's backbone with a Bradley-Terry reward head.

``config.py`` (the options), ``model.py`` (the adapted backbone and its reward head), ``loss.py``
(the objective), ``trainer.py`` (data, the shared training loop, the saved adapter). The adapter
shapes the backbone; the backend then fits its own head on the adapted features, as on any
encoder's, so onboarding a user never touches the adapter.
"""

from .config import LoRAConfig
from .trainer import ADAPTER_FILES, finetune_lora, require_peft

__all__ = ["ADAPTER_FILES", "LoRAConfig", "finetune_lora", "require_peft"]
