"""rules_random: see FAMILIES."""
from core.hookspecs import register_families

FAMILIES: tuple[str, ...] = ("keys", "threefry", "samplers", "rbg", "rng_uniform")

register_rules = register_families(__name__, FAMILIES)
