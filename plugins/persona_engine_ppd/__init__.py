"""The ``ppd`` generator: personalized image generation with user-conditioned Diffusion-DPO.

Dang, M., Singhal, A., Sheynin, S., Ermon, S., Grover, A. (2025). Personalized Preference
Fine-tuning of Diffusion Models. CVPR 2025, arXiv 2501.06655. Built on Diffusion-DPO: Wallace, B.
et al. (2024). Diffusion Model Alignment Using Direct Preference Optimization. CVPR 2024.

A diffusers UNet gets a zero-initialised user branch on every cross-attention layer
(:mod:`.model`), trained with Diffusion-DPO across many users (:mod:`.loss`, :mod:`.trainer`); a
new user is an embedding pooled from a few image pairs (:mod:`.users`), encoded by the image
encoder plugins registered here (``tiny-image``, self-supervised; ``tiny-image-supervised``, an
oracle for comparison; ``clip-image`` from a local directory: :mod:`.encoder`).

This module stays light: torch and diffusers are imported by the code that uses them.
"""

from persona_engine import hookimpl

from .encoder import CLIPImageEncoder, TinyImageEncoder, TinyImageSupervisedEncoder
from .generator import PPDGenerator, register_model

__all__ = [
    "PPDGenerator",
    "TinyImageEncoder",
    "TinyImageSupervisedEncoder",
    "CLIPImageEncoder",
    "register_model",
]


@hookimpl
def register_generators(register):
    register(PPDGenerator)


@hookimpl
def register_encoders(register):
    register(TinyImageEncoder)
    register(TinyImageSupervisedEncoder)
    register(CLIPImageEncoder)


@hookimpl
def register_commands(cli):
    from .commands import ppd

    cli.add_command(ppd)
