"""rock_jax: on-policy distillation with Rock-Token-aware weighting."""

__version__ = "0.1.0"
