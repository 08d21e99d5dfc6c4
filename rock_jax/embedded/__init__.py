"""The embedded task's own teacher and student, trained here and cached.

Modules:
  band    where their supervised training stops: an accuracy band, on any CPU
  sft     `train_sft`: supervised fine-tuning from scratch, stopped in the band
  models  `prepare`: both models as Hugging Face folders, trained once, cached
"""

from rock_jax.embedded.models import prepare, training_record
from rock_jax.embedded.sft import SFTSpec, train_sft

__all__ = ["SFTSpec", "prepare", "train_sft", "training_record"]
