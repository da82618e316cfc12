"""The ``wl:`` spec section: defaults of ``graphdl wl check`` for this model.

::

    wl:
      pairs: [csl, aggregators]   # families (or graph6 pair files) checked when --pairs is not given
      epochs: 40                  # training steps per pair (one batch of all relabellings)
      lr: 1.0e-3
      relabelings: 32             # n in Hotelling's T² (must exceed the output dim p)
      threshold: null             # null: (n − 1) p / (n − p) · F_{p, n−p}(0.95); 72.34 for n=32, p=16
      seed: 0

Command-line flags override the section; the section overrides the built-in defaults.
Importing this module registers the section with the spec loader.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from graphdl.spec.model import register_section


class WLSection(BaseModel):
    """Defaults for ``graphdl wl check`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pairs: list[str] = Field(default_factory=list)
    epochs: PositiveInt | None = None
    lr: PositiveFloat | None = None
    relabelings: int | None = Field(None, ge=3)
    threshold: PositiveFloat | None = None
    seed: int | None = None


register_section("wl", WLSection)

__all__ = ["WLSection"]
