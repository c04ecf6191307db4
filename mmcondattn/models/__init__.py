"""Registry-facing parts: conditioned attention layers, backbones, and the conditioning
probe (:func:`measure_conditioning`)."""
from .attention import *  # noqa: F401,F403
from .backbones import *  # noqa: F401,F403
from .probe import measure_conditioning  # noqa: F401
