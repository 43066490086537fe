"""Errors that mean "the request was bad", as opposed to a server fault.

Triton models and the worker map ``InvalidInput`` to gRPC ``INVALID_ARGUMENT`` (a permanent job
failure) and show its message to the merchant's developer, so every message says what was wrong
and what to do about it.
"""


class InvalidInput(ValueError):
    """The image or a request parameter cannot be processed; retrying the same input won't help."""


class EmptyMesh(InvalidInput):
    """The density field has no surface at the requested threshold, so there is no mesh to return."""
