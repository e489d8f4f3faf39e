"""Transforms with a one-pass value and log-determinant (``call_and_ladj``)."""

from flows.core.transforms.base import (
    ComposedTransform,
    DependentTransform,
    IdentityTransform,
    InverseTransform,
    Transform,
    call_and_ladj,
    inverse_and_ladj,
)

__all__ = [
    "ComposedTransform",
    "DependentTransform",
    "IdentityTransform",
    "InverseTransform",
    "Transform",
    "call_and_ladj",
    "inverse_and_ladj",
]
