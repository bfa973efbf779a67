"""fernn: flow-equivariant recurrent networks (Keller, NeurIPS 2025) in PyTorch.

Public API::

    flow = fernn.TranslationFlow2D(max_speed=2)          # V = {-2..2}^2
    rnn = fernn.FlowRNN(in_channels=1, hidden_channels=32, flow=flow, cell="rnn")
    out, state = rnn(x)          # (B, T, C, H, W) -> (B, T, V, C_h, H, W)

Submodules: ``fernn.models`` (registry of predictors and classifiers), ``fernn.data``
(MNIST, Flowing MNIST), ``fernn.testing`` (equivariance checks).
"""

from ._allocator import tune_cpu_allocator
from ._cells import CELL_TYPES, NONLINEARITIES, FlowRNNCell, FlowTransport, LearnedTransport
from ._flows import Flow, RotationFlow2D, TranslationFlow2D
from ._group_conv import KERNEL_BASES, GroupConv2d, LiftingConv2d, steerable_basis
from ._rnn import POOL_MODES, FlowRNN, VelocityPool, pool_velocities
from ._rotation import rotate
from ._torus import roll2d
from ._version import __version__

__all__ = [
    "CELL_TYPES",
    "KERNEL_BASES",
    "NONLINEARITIES",
    "POOL_MODES",
    "Flow",
    "GroupConv2d",
    "LiftingConv2d",
    "RotationFlow2D",
    "FlowRNN",
    "FlowRNNCell",
    "FlowTransport",
    "LearnedTransport",
    "TranslationFlow2D",
    "VelocityPool",
    "__version__",
    "pool_velocities",
    "roll2d",
    "rotate",
    "steerable_basis",
    "tune_cpu_allocator",
]
