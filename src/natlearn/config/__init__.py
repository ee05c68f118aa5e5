"""Training configuration. The schema alone: it imports nothing of natlearn but
:mod:`natlearn.errors` and the choices' types (:mod:`natlearn.choices`).

- :mod:`~natlearn.config.schema`: :class:`Config`, one flat dataclass of typed, documented fields,
  checked by :meth:`Config.validate` and resolved against the data and the machine by
  :meth:`Config.resolve`; :func:`apply_overrides` (presets: :mod:`natlearn.presets`).
- :mod:`~natlearn.config.checks`: what a config refuses, each in one line.
- :mod:`~natlearn.config.resolved`: :class:`Resolved` (what the data and the machine decide) and
  :func:`resolve_device`, the one device resolver.
- :mod:`~natlearn.config.text`: ``key=value`` and YAML values coerced to a field's type.

Every option the paper ablates is a field: input (rgb/gray/sobel), targets (sphere/discrete),
loss (square/softmax), reassign_every (3 official, 1, or 0 = never), k and spare_targets, dim; and
the head between the probed features and the targets (linear, or the official code's mlp).
"""

from natlearn.config.resolved import Resolved, resolve_device
from natlearn.config.schema import FIELD_TYPES, RESUME_LOCKED, Config, apply_overrides, choices

__all__ = [
    "FIELD_TYPES",
    "RESUME_LOCKED",
    "Config",
    "Resolved",
    "apply_overrides",
    "choices",
    "resolve_device",
]
