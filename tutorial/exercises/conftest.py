"""How every exercise's tests find the code they check.

A test file names its exercise in a constant, `EXERCISE = "ex03_bigram"`, and asks for the `exercise`
fixture: the module loaded from `ex03_bigram.py` in this folder (your code). With the environment variable
`EXERCISE_SOLUTIONS=1` the same tests run against `solutions/ex03_bigram.py` instead, the worked answer.
CI runs both: against the untouched stubs every test must fail, against the solutions every test must pass
(tests/test_tutorial.py), which proves that the tests check something and that the answers are right.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def use_solutions() -> bool:
    return os.environ.get("EXERCISE_SOLUTIONS") == "1"


def load_exercise(name: str):
    """The module `name` (e.g. "ex03_bigram"): yours from this folder, or the solution's."""
    folder = HERE / "solutions" if use_solutions() else HERE
    path = folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{folder.name}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def exercise(request):
    """The exercise module of the calling test file (its `EXERCISE` constant), loaded afresh for every test."""
    return load_exercise(request.module.EXERCISE)


def pytest_report_header(config):
    return "testing: " + ("the solutions (EXERCISE_SOLUTIONS=1)" if use_solutions() else "your code (exNN_*.py)")
