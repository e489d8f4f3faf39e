"""flows.core.validation: what each check accepts, what it refuses, and in which words."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from flows.core.validation import (
    check_choice,
    check_count,
    check_fraction,
    check_positive,
    check_shape,
    check_sizes,
)


def test_importing_the_module_imports_no_torch():
    code = "import sys, flows.core.validation\nprint('torch' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: check_count("transforms", 1), 1),
        (lambda: check_count("context", 0, minimum=0), 0),
        (lambda: check_count("features", 2, minimum=2), 2),
        (lambda: check_count("epochs", None, optional=True), None),
        (lambda: check_count("epochs", 7, optional=True), 7),
        (lambda: check_positive("atol", 1e-9), 1e-9),
        (lambda: check_positive("atol", 3), 3),
        (lambda: check_positive("lr", 0.1, finite=True), 0.1),
        (lambda: check_positive("clip_grad", None, optional=True), None),
        (lambda: check_positive("bound", math.inf), math.inf),
        (lambda: check_fraction("p", 0), 0),
        (lambda: check_fraction("p", 1.0), 1.0),
        (lambda: check_fraction("validation", 0.0, one=False), 0.0),
        (lambda: check_fraction("slope", 0.5, zero=False, one=False), 0.5),
        (lambda: check_sizes("hidden_features", [64, 32]), (64, 32)),
        (lambda: check_sizes("hidden_features", ()), ()),
        (lambda: check_shape("shape", (3, 0)), (3, 0)),
        (lambda: check_shape("shape", []), ()),
        (lambda: check_choice("noise", "gaussian", ("rademacher", "gaussian")), "gaussian"),
    ],
)
def test_accepted_values_come_back(call: Callable[[], Any], expected: Any):
    result = call()
    assert result == expected and type(result) is type(expected)


def test_counts_and_numbers_come_back_as_the_same_object():
    big = 10**30
    assert check_count("n", big) is big
    value = 0.25
    assert check_positive("x", value) is value
    assert check_fraction("x", value) is value


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        # Counts: a wrong type is a TypeError, a value out of range a ValueError.
        (
            lambda: check_count("transforms", 0),
            ValueError,
            "transforms must be an int >= 1, got 0",
        ),
        (
            lambda: check_count("context", -1, minimum=0, owner="MAF"),
            ValueError,
            "MAF: context must be an int >= 0, got -1",
        ),
        (lambda: check_count("bins", 2.0), TypeError, "bins must be an int >= 1, got 2.0"),
        (lambda: check_count("bins", "8"), TypeError, "bins must be an int >= 1, got '8'"),
        (lambda: check_count("bins", True), TypeError, "bins must be an int >= 1, got True"),
        (lambda: check_count("bins", None), TypeError, "bins must be an int >= 1, got None"),
        (
            lambda: check_count("epochs", 0, optional=True),
            ValueError,
            "epochs must be an int >= 1 or None, got 0",
        ),
        (
            lambda: check_count("epochs", 1.5, optional=True),
            TypeError,
            "epochs must be an int >= 1 or None, got 1.5",
        ),
        # Positive numbers.
        (lambda: check_positive("atol", 0), ValueError, "atol must be a positive number, got 0"),
        (
            lambda: check_positive("atol", -1e-3),
            ValueError,
            "atol must be a positive number, got -0.001",
        ),
        (
            lambda: check_positive("atol", math.nan),
            ValueError,
            "atol must be a positive number, got nan",
        ),
        (
            lambda: check_positive("atol", False),
            TypeError,
            "atol must be a positive number, got False",
        ),
        (
            lambda: check_positive("atol", "1e-6"),
            TypeError,
            "atol must be a positive number, got '1e-6'",
        ),
        (
            lambda: check_positive("lr", math.inf, finite=True),
            ValueError,
            "lr must be a finite positive number, got inf",
        ),
        (
            lambda: check_positive("clip_grad", 0.0, optional=True, owner="fit"),
            ValueError,
            "fit: clip_grad must be a positive number or None, got 0.0",
        ),
        # Fractions.
        (lambda: check_fraction("p", 1.5), ValueError, "p must be a fraction in [0, 1], got 1.5"),
        (
            lambda: check_fraction("p", -0.0001),
            ValueError,
            "p must be a fraction in [0, 1], got -0.0001",
        ),
        (
            lambda: check_fraction("p", math.nan),
            ValueError,
            "p must be a fraction in [0, 1], got nan",
        ),
        (
            lambda: check_fraction("p", "0.5"),
            TypeError,
            "p must be a fraction in [0, 1], got '0.5'",
        ),
        (
            lambda: check_fraction("validation", 1, one=False),
            ValueError,
            "validation must be a fraction in [0, 1), got 1",
        ),
        (
            lambda: check_fraction("slope", 0, zero=False),
            ValueError,
            "slope must be a fraction in (0, 1], got 0",
        ),
        # Sizes and shapes: the bad entry is named.
        (
            lambda: check_sizes("hidden_features", 64),
            TypeError,
            "hidden_features must be a sequence of ints >= 1, got 64",
        ),
        (
            lambda: check_sizes("hidden_features", "64"),
            TypeError,
            "hidden_features must be a sequence of ints >= 1, got '64'",
        ),
        (
            lambda: check_sizes("hidden_features", [64, 0]),
            ValueError,
            "hidden_features must be a sequence of ints >= 1, got [64, 0] "
            "(hidden_features[1] is 0)",
        ),
        (
            lambda: check_sizes("hidden_features", [8.0], owner="MLP"),
            TypeError,
            "MLP: hidden_features must be a sequence of ints >= 1, got [8.0] "
            "(hidden_features[0] is 8.0)",
        ),
        (
            lambda: check_shape("shape", (2, -1)),
            ValueError,
            "shape must be a shape (a sequence of ints >= 0), got (2, -1) (shape[1] is -1)",
        ),
        (
            lambda: check_shape("shape", (True,)),
            TypeError,
            "shape must be a shape (a sequence of ints >= 0), got (True,) (shape[0] is True)",
        ),
        # Choices.
        (
            lambda: check_choice("noise", "uniform", ("rademacher", "gaussian"), owner="FFJ"),
            ValueError,
            "FFJ: noise must be one of 'rademacher', 'gaussian', got 'uniform'",
        ),
    ],
)
def test_refused_values_name_the_argument_and_the_value(
    call: Callable[[], Any], error: type[Exception], message: str
):
    with pytest.raises(error) as caught:
        call()
    assert type(caught.value) is error
    assert str(caught.value) == message
