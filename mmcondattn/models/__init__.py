"""Registry-facing parts: conditioned attention layers and backbones."""
from .attention import *  # noqa: F401,F403
from .backbones import *  # noqa: F401,F403
