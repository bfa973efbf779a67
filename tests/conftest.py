"""Shared fixtures: a fixed seed for every test, a dtype to run in, small flows."""

import pytest
import torch

import fernn


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)
    return 0


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


@pytest.fixture
def flow1():
    return fernn.TranslationFlow2D(max_speed=1)


@pytest.fixture
def rtol(dtype):
    """Integer flows on a torus are exact: 1e-5 in float32, 1e-9 in float64."""
    return 1e-9 if dtype == torch.float64 else 1e-5
