"""Smoke-test kernels: the ``gpu`` marker, and Triton's interpreter on machines without CUDA.

The interpreter has to be chosen before the kernels are defined, that is before the test
modules import ``moe_migrate.smoke.launch``; this conftest is imported first. An explicit
``TRITON_INTERPRET`` in the environment always wins. Nothing here needs torch to be installed.
"""

from __future__ import annotations

import os


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "gpu: needs a CUDA device (bf16 on an H100); skipped without one"
    )
    if "TRITON_INTERPRET" not in os.environ and not _cuda_available():
        os.environ["TRITON_INTERPRET"] = "1"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()
