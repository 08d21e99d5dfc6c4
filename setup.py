"""Install metadata for rock_jax.

Lower bounds are the versions the test suite runs on; upper bounds stop at the
next minor release for the fast-moving JAX packages and the next major
otherwise, wide enough to admit the preinstalled JAX of accelerator images.

Supported: Python 3.11 and newer, JAX 0.10.2 to 0.12.x. The registry serves
Python 3.11 jax 0.10.2 and Python 3.12+ the newest jax (0.12.x) with flax
0.12.12; CI runs the suite on both ends (Python 3.11 and 3.12, .ci/run).
"""

import setuptools

INSTALL_REQUIRES = [
  "jax>=0.10.2,<0.13",
  "flax>=0.12.8,<0.13",
  "optax>=0.2.8,<0.3",
  "orbax-checkpoint>=0.12.8,<0.13",
  "transformers>=5.24,<6",
  "safetensors>=0.8,<0.9",
  "tensorflow-datasets>=4.9.10,<5",
  "ml-collections>=1.1,<2",
  "absl-py>=2.1,<3",
  "numpy>=2.0,<3",
  "jinja2>=3.1,<4",
  "tokenizers>=0.23,<0.24",
  "scipy>=1.13,<2",
  "tensorboardX>=2.6,<3",
  "tqdm>=4.66,<5",
  "matplotlib>=3.9,<4",
  # gs:// paths without TensorFlow: etils.epath and fsspec reach Cloud
  # Storage through gcsfs (orbax's arrays go through tensorstore).
  "gcsfs>=2026.10.1",
]

EXTRAS_REQUIRE = {
  # torch only builds tiny Hugging Face reference models inside tests; the
  # runtime never imports it. 2.13.0 is the CPU build on the project machines.
  # pytest-xdist runs the test files on every core (the default suite's
  # time is mostly XLA compiling on one thread).
  "test": [
    "pytest>=8,<10",
    "pytest-xdist>=3.6,<4",
    "torch==2.13.0",
    # A Cloud Storage API server on loopback for the gs:// tests.
    "gcp-storage-emulator>=2026.7.19",
    # The independent reference of the LoRA adapters and their PEFT folders.
    "peft>=0.22,<0.23",
  ],
  "tpu": ["jax[tpu]>=0.10.2,<0.13"],
  "gpu": ["jax[cuda12]>=0.10.2,<0.13"],
}

setuptools.setup(
  name="rock_jax",
  version="0.1.0",
  description=(
    "On-policy distillation with Rock-Token-aware weighting in JAX/Flax."
  ),
  long_description=open("README.md", encoding="utf-8").read(),
  long_description_content_type="text/markdown",
  packages=setuptools.find_packages(include=["rock_jax", "rock_jax.*"]),
  python_requires=">=3.11",
  classifiers=[
    "Programming Language :: Python :: 3",
    "Programming Language :: Python :: 3.11",
    "Programming Language :: Python :: 3.12",
  ],
  install_requires=INSTALL_REQUIRES,
  extras_require=EXTRAS_REQUIRE,
)
