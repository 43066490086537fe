"""A real ``tritonserver`` on loopback, from the ``nvidia-pytriton`` wheel (Triton 2.51, Python backend)."""

from local_triton.server import LocalTriton, TritonStartError, free_port

__all__ = ["LocalTriton", "TritonStartError", "free_port"]
