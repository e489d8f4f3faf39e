"""The transforms package: its exports, and no side effects on torch."""

from __future__ import annotations

import subprocess
import sys

import torch

import flows.core.transforms as transforms


def test_all_names_are_exported_transforms():
    assert len(set(transforms.__all__)) == len(transforms.__all__)
    for name in transforms.__all__:
        obj = getattr(transforms, name)
        if name.endswith("Transform"):
            assert issubclass(obj, torch.distributions.Transform), name


TORCH_TRANSFORMS = [
    "AffineTransform",
    "ExpTransform",
    "SigmoidTransform",
    "TanhTransform",
    "SoftplusTransform",
    "PowerTransform",
    "ReshapeTransform",
    "IndependentTransform",
]


def test_torch_transforms_are_reexported():
    for name in TORCH_TRANSFORMS:
        assert getattr(transforms, name) is getattr(torch.distributions, name)


def test_importing_flows_leaves_torch_untouched():
    # A fresh interpreter, so that nothing imported by other tests hides a change.
    code = """
import torch
import torch.distributions as D
def classes():
    return {n: dict(vars(c)) for n in dir(D) if isinstance(c := getattr(D, n), type)}
before = classes()
flags = (torch.get_default_dtype(), D.Distribution._validate_args)
import flows.core.transforms, flows.core.distributions, flows.core.testing
after = classes()
assert not hasattr(D.Transform, "call_and_ladj"), "call_and_ladj added to torch's Transform"
assert not hasattr(D.Transform, "inverse_and_ladj")
assert before.keys() == after.keys()
for name in before:
    assert before[name].keys() == after[name].keys(), name
    for key in before[name]:
        assert before[name][key] is after[name][key], (name, key)
assert flags == (torch.get_default_dtype(), D.Distribution._validate_args)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
