"""rules_nn: see FAMILIES."""
from core.hookspecs import register_families

FAMILIES: tuple[str, ...] = ("conv", "windows", "activations")

register_rules = register_families(__name__, FAMILIES)
