"""fraud_kfp: one thin KFP component per pipeline step; `build(image)` makes them for an image."""
from fraud_kfp.components import DEFAULT_IMAGE, Components, build

__all__ = ["DEFAULT_IMAGE", "Components", "build"]
