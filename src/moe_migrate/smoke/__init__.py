"""The smoke test: build each migrated FusedMoE call site's layer and run it.

Imported lazily, only when the smoke test runs; this file imports nothing, so that
``import moe_migrate.smoke`` stays free. The pieces, device side first:

- ``kernels/``   @triton.jit kernels only: grouped gate/up GEMM with the activation fused,
                 grouped down GEMM with the routing weights fused, top-k combine.
- ``launch.py``  host wrappers: check, allocate, grid, launch.
- ``reference.py`` the same stages in plain torch, plus a per-expert loop.
- ``routing.py`` vLLM's top-k routing semantics in vectorised torch.
- ``layer.py``   ``FusedMoE``: vLLM's constructor signature, one device, two backends.
"""
