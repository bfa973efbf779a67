"""Flow-equivariant recurrent cells: vanilla (the paper's update), ConvGRU and ConvLSTM.

Every cell moves each velocity slice of its hidden state along its own flow before any
gate sees it (the *transport* ``S_ν``), then applies convolutions shared by all ν::

    vanilla:  h_t(ν) = σ( U ⋆ f_t + W ⋆ S_ν h_{t-1}(ν) )                      (FERNN.md §2)
    gru:      [z, r, n̂] = U ⋆ f_t + b,  [z', r', n'] = W ⋆ S_ν h_{t-1}(ν)
              z = sigmoid(z + z'), r = sigmoid(r + r'), n = φ(n̂ + r ⊙ n')
              h_t(ν) = (1 − z) ⊙ n + z ⊙ S_ν h_{t-1}(ν)
    lstm:     [i, f, g, o] = U ⋆ f_t + b + W ⋆ S_ν h_{t-1}(ν)
              c_t(ν) = sigmoid(f) ⊙ S_ν c_{t-1}(ν) + sigmoid(i) ⊙ φ(g)
              h_t(ν) = sigmoid(o) ⊙ φ(c_t(ν))

Because shifts commute with convolutions (circular padding), with pointwise maps and
with each other, all three satisfy the law of FERNN.md §3 exactly: if every input frame
is moved, ``f'_t = S_{tν̂} f_t``, then ``h'_t(ν) = S_{tν̂} h_t(ν − ν̂)`` wherever
``ν − ν̂ ∈ V``. The input term ``U ⋆ f_t`` of a first layer is computed once and broadcast
over V ("trivial lift"); a deeper layer reads the layer below velocity-wise. With
``input_conv=False`` the cell has no U: its input *is* the input term (``U`` the identity),
as in the research KTH classifier, whose frame encoder's output enters the recurrence.

Replacing the fixed shift by a learned per-velocity kernel (:class:`LearnedTransport`)
gives the G-RNN+ baseline: the same structure and cost, but not flow equivariant.
"""

from __future__ import annotations

from typing import Callable

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_input, odd_kernel_size, positive_int
from ._flows import Flow, TranslationFlow2D, _check_padding_mode
from ._recurrence import RECURRENCE_NONLINEARITIES, VanillaRecurrence
from ._torus import Conv2d, circular_pad

__all__ = ["FlowRNNCell", "FlowTransport", "LearnedTransport", "CELL_TYPES", "NONLINEARITIES"]

CELL_TYPES = ("rnn", "gru", "lstm")
_GATES = {"rnn": 1, "gru": 3, "lstm": 4}

NONLINEARITIES: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
    "identity": lambda x: x,
}


class FlowTransport(nn.Module):
    """The fixed transport ``S_ν``: each velocity slice moves one step along its own flow.

    Shapes: ``(B, V, C, H, W) -> (B, V, C, H, W)``.
    """

    def __init__(self, flow: Flow, padding_mode: str = "circular"):
        super().__init__()
        _check_padding_mode(padding_mode)
        self.flow = flow
        self.padding_mode = padding_mode

    def forward(self, h: Tensor, pad: int = 0, offset: Tensor | None = None) -> Tensor:
        """``S_ν h`` (``S_{ν + d_b}`` with an ``offset`` ``(B, 2)``), padded by ``pad`` per
        side (see :meth:`Flow.move_hidden`)."""
        return self.flow.move_hidden(h, padding_mode=self.padding_mode, pad=pad, offset=offset)

    def extra_repr(self) -> str:
        return f"{self.flow!r}, padding_mode={self.padding_mode!r}"


MAX_LEARNED_TRANSPORT = 2**31
"""The most parameters a :class:`LearnedTransport` builds (8 GiB in float32)."""


class LearnedTransport(nn.Module):
    """G-RNN+ transport: slice ν is convolved with its own learned ``k×k`` kernel.

    ``k = 2r + 1`` where ``r`` is the flow's largest speed, so the kernel could represent
    every shift of V; the kernel of a slice is shared by its channels. Kaiming-normal
    initialisation (``std = 1/k``), as in the research code. Not flow equivariant.

    Shapes: ``(B, V, C, H, W) -> (B, V, C, H, W)``.
    """

    def __init__(self, flow: Flow, padding_mode: str = "circular"):
        super().__init__()
        _check_padding_mode(padding_mode)
        radius = getattr(flow, "radius", None)
        if radius is None:
            raise ValueError(
                f"a learned transport needs a translation flow with a radius; got {flow!r}"
            )
        self.flow = flow
        self.padding_mode = padding_mode
        k = 2 * radius + 1
        if len(flow) * k * k > MAX_LEARNED_TRANSPORT:
            raise ValueError(
                f"a learned transport has a {k}×{k} kernel (2r+1, r = {radius} the largest speed "
                f"of {flow!r}) per velocity: {len(flow) * k * k} parameters, more than "
                f"{MAX_LEARNED_TRANSPORT}. Use velocities of a smaller radius."
            )
        self.kernel = nn.Parameter(torch.randn(len(flow), k, k) / k)  # (V, k, k)

    def forward(self, h: Tensor, offset: Tensor | None = None) -> Tensor:
        if offset is not None:
            raise ValueError("a learned transport takes no self-motion offset (offset=None)")
        B, V, C, H, W = h.shape
        k = self.kernel.shape[-1]
        x = h.reshape(B, V * C, H, W)  # 'b v c h w -> b (v c) h w'
        weight = self.kernel.repeat_interleave(C, dim=0)[:, None]  # (V*C, 1, k, k)
        p = k // 2
        if self.padding_mode == "circular":
            x = circular_pad(x, p)
            out = F.conv2d(x, weight, groups=V * C)
        else:
            out = F.conv2d(x, weight, padding=p, groups=V * C)
        return out.view(B, V, C, H, W)

    def extra_repr(self) -> str:
        return f"{self.flow!r}, kernel={tuple(self.kernel.shape)}, padding_mode={self.padding_mode!r}"


class FlowRNNCell(nn.Module):
    """One flow-equivariant recurrent layer.

    Args:
        in_channels: channels of the input (per velocity slice if ``lifted_input``).
        hidden_channels: channels (fields, for a flow with a fibre such as rotations: each
            then has ``flow.fibre`` orientation channels) of each velocity slice.
        flow: the velocity set V and its action (e.g. ``TranslationFlow2D(max_speed=2)``).
        cell: ``"rnn"`` (the paper's update), ``"gru"`` or ``"lstm"``.
        kernel_size: odd size of the U and W convolutions.
        nonlinearity: σ of the vanilla cell (default ``"relu"``) or φ of the gated cells
            (default ``"tanh"``); one of :data:`NONLINEARITIES`.
        bias: add a bias to the input convolution (default: no for ``rnn`` as in the
            paper, yes for gated cells). A bias is invariant, so the law still holds.
        padding_mode: ``"circular"`` (exact on the torus) or ``"zeros"`` (bounded frames:
            content leaving the frame is lost, so equivariance breaks at the border).
        lifted_input: the input already has a V axis (a deeper layer); else it is
            broadcast over V.
        transport: ``"flow"`` (``S_ν``) or ``"learned"`` (G-RNN+).
        input_conv: ``True`` (default): the input term is ``U ⋆ x``. ``False``: it is ``x``
            itself (U the identity, no parameters, no bias), so ``x`` must already have
            ``G·hidden_channels`` channels (per field's fibre for a lifted input) — e.g. the
            output of a frame encoder that precedes the cell. The identity commutes with
            every flow's action, so the law still holds. A first layer of a flow with a
            fibre (rotations) needs its lifting convolution: ``False`` is refused there.

    Shapes:
        input term (:meth:`input_term`): ``(B, T, C_in, H, W)`` or ``(B, T, V, C_in, H, W)``
        → ``(B, T, 1 or V, G·C_h, H, W)`` with G gates.
        state: ``(B, V, C_h, H, W)``, a pair of them for ``lstm``.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        flow: Flow,
        cell: str = "rnn",
        kernel_size: int = 3,
        nonlinearity: str | None = None,
        bias: bool | None = None,
        padding_mode: str = "circular",
        lifted_input: bool = False,
        transport: str = "flow",
        input_conv: bool = True,
    ):
        super().__init__()
        if cell not in CELL_TYPES:
            raise ValueError(f"cell must be one of {CELL_TYPES}, got {cell!r}")
        if nonlinearity is None:
            nonlinearity = "relu" if cell == "rnn" else "tanh"
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(
                f"nonlinearity must be one of {sorted(NONLINEARITIES)}, got {nonlinearity!r}"
            )
        kernel_size = odd_kernel_size(kernel_size)
        in_channels = positive_int(in_channels, "in_channels")
        hidden_channels = positive_int(hidden_channels, "hidden_channels")
        _check_padding_mode(padding_mode)
        if transport == "flow":
            self.transport: nn.Module = FlowTransport(flow, padding_mode)
        elif transport == "learned":
            self.transport = LearnedTransport(flow, padding_mode)
        else:
            raise ValueError(f"transport must be 'flow' or 'learned', got {transport!r}")
        gates = _GATES[cell]
        if not isinstance(input_conv, bool):
            raise TypeError(f"input_conv must be True or False, got {input_conv!r}")
        if not input_conv:
            if bias:
                raise ValueError("bias=True needs an input convolution: with input_conv=False "
                                 "the input term is the input itself (give bias=None or False)")
            if in_channels != gates * hidden_channels:
                raise ValueError(
                    f"input_conv=False makes the input the input term, so in_channels must be "
                    f"{gates}·hidden_channels = {gates * hidden_channels} for cell={cell!r}; "
                    f"got in_channels={in_channels} (give input_conv=True, or an input with "
                    f"{gates * hidden_channels} channels)"
                )
            if flow.fibre != 1 and not lifted_input:
                raise ValueError(
                    f"input_conv=False on a first layer needs a flow without a fibre; {flow!r} "
                    f"lifts its input onto {flow.fibre} orientations with a lifting convolution "
                    f"(give input_conv=True)"
                )
            bias = False
        if bias is None:
            bias = cell != "rnn"

        self.flow = flow
        self.cell = cell
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.nonlinearity = nonlinearity
        self.lifted_input = lifted_input
        self.input_conv = input_conv
        # The flow supplies convolutions that commute with its action: ordinary ones for
        # translations, C_N lifting/group convolutions for rotations.
        self.conv_in = (flow.make_conv(in_channels, gates * hidden_channels, kernel_size, bias,
                                       padding_mode, input_on_group=lifted_input)
                        if input_conv else nn.Identity())  # U
        self.conv_hid = flow.make_conv(hidden_channels, gates * hidden_channels, kernel_size,
                                       False, padding_mode, input_on_group=True)  # W
        self._phi = NONLINEARITIES[nonlinearity]
        # Fast path: the transport's gather also writes W's circular padding (one pass
        # instead of a shift, a padding copy and the padding's costly backward). Exact.
        self._can_fuse = (
            transport == "flow" and type(self.conv_hid) in (nn.Conv2d, Conv2d)
            and self.conv_hid.padding_mode == "circular"
            and self.conv_hid.stride == (1, 1) and self.conv_hid.dilation == (1, 1)
            and self.conv_hid.groups == 1
            and self.conv_hid.padding[0] == self.conv_hid.padding[1]
        )
        self._fused = self._can_fuse
        # Faster still for the paper's update: a whole sequence as one autograd node with a
        # hand-written backward through time (fernn._recurrence). Same results.
        self._can_fuse_sequence = (
            self._can_fuse and cell == "rnn" and isinstance(flow, TranslationFlow2D)
            and nonlinearity in RECURRENCE_NONLINEARITIES and self.conv_hid.bias is None
        )
        self._fused_sequence = self._can_fuse_sequence
        if cell == "lstm" and bias:
            with torch.no_grad():  # forget gate starts open: the usual LSTM initialisation
                self.conv_in.bias[hidden_channels : 2 * hidden_channels].fill_(1.0)

    @property
    def num_velocities(self) -> int:
        return len(self.flow)

    @property
    def can_fuse_padding(self) -> bool:
        """Whether the transport can write W's padding (a translation flow, ``"flow"``
        transport, circular padding, a plain convolution)."""
        return self._can_fuse

    @property
    def fused_padding(self) -> bool:
        """The fast path is on (default where possible); set False to run the plain path
        (shift, then the convolution pads). Both give the same results."""
        return self._fused

    @fused_padding.setter
    def fused_padding(self, value: bool) -> None:
        if value and not self._can_fuse:
            raise ValueError("this cell cannot fuse its padding into the transport (it needs a "
                             "translation flow, transport='flow', circular padding)")
        self._fused = bool(value)

    @property
    def can_fuse_sequence(self) -> bool:
        """Whether :meth:`run_sequence` can run the whole sequence as one autograd node
        (the vanilla cell on a translation flow with circular padding, σ one of
        ``relu``/``tanh``/``sigmoid``/``identity``)."""
        return self._can_fuse_sequence

    @property
    def fused_sequence(self) -> bool:
        """The sequence fast path is on (default where possible); set False to step frame
        by frame under autograd. Both give the same results."""
        return self._fused_sequence

    @fused_sequence.setter
    def fused_sequence(self, value: bool) -> None:
        if value and not self._can_fuse_sequence:
            raise ValueError("this cell cannot run its sequence fused (it needs cell='rnn', a "
                             "TranslationFlow2D, transport='flow', circular padding and a "
                             f"nonlinearity in {RECURRENCE_NONLINEARITIES})")
        self._fused_sequence = bool(value)

    def extra_repr(self) -> str:
        return (
            f"cell={self.cell!r}, nonlinearity={self.nonlinearity!r}, "
            f"lifted_input={self.lifted_input}"
            + ("" if self.input_conv else ", input_conv=False")
        )

    def input_term(self, x: Tensor) -> Tensor:
        """``U ⋆ x`` for every frame at once (``x`` itself with ``input_conv=False``).

        Shapes: ``(B, T, C_in, H, W)`` → ``(B, T, 1, G·C_h, H, W)`` (shared by all ν), or,
        with ``lifted_input``, ``(B, T, V, C_in, H, W)`` → ``(B, T, V, G·C_h, H, W)``.
        """
        lead = x.shape[:-3]  # (B, T) or (B, T, V)
        u = self.conv_in(x.reshape(-1, *x.shape[-3:]))  # '... c h w -> (...) c h w'
        u = u.view(*lead, *u.shape[1:])
        return u if self.lifted_input else u.unsqueeze(2)

    @property
    def state_channels(self) -> int:
        """Channels of a hidden slice: ``hidden_channels`` fields × the flow's fibre."""
        return self.hidden_channels * self.flow.fibre

    def initial_state(self, batch: int, height: int, width: int, like: Tensor):
        """Zero state ``(B, V, C_h·fibre, H, W)`` (a pair for ``lstm``), ``like``'s device and dtype."""
        h = like.new_zeros(batch, len(self.flow), self.state_channels, height, width)
        return (h, h.clone()) if self.cell == "lstm" else h

    def hidden_weight(self) -> Tensor | None:
        """W's kernel as the convolution uses it, where building it costs something (the
        rotated kernel family of a C_N group convolution); else None. :class:`FlowRNN`
        builds it once per sequence and hands it to every :meth:`step`."""
        expanded = getattr(self.conv_hid, "expanded_weight", None)
        return expanded() if expanded is not None else None

    def run_sequence(self, u: Tensor, state, keep: bool = True, zero_state: bool = False,
                     hidden_weight: Tensor | None = None, offsets: Tensor | None = None):
        """Step through all frames of ``u`` ``(B, T, 1 or V, G·C_h, H, W)`` from ``state``.

        Returns the states after each frame ``(B, T, V, C_h, H, W)`` (None unless ``keep``)
        and the final state. ``zero_state`` says that ``state`` is all zeros (the fast path
        then skips the first frame's convolution). ``offsets`` ``(B, T, 2)``: frame t's
        transport is ``S_{ν + d_{b,t}}`` (see :meth:`Flow.move_hidden`).
        """
        if offsets is not None:
            offsets = torch.as_tensor(offsets, device=u.device)
            if offsets.shape != (u.shape[0], u.shape[1], 2) or offsets.dtype.is_floating_point:
                raise ValueError(f"offsets must be integer (B, T, 2) = ({u.shape[0]}, "
                                 f"{u.shape[1]}, 2); got {tuple(offsets.shape)} {offsets.dtype}")
            offsets = offsets.long()
        # Under torch.compile the plain path is traced instead (inductor fuses it; the fast
        # path's buffers written with out= do not trace).
        if (self._fused_sequence and (keep or torch.is_grad_enabled())
                and not torch.compiler.is_compiling()):
            h0, weight = (None if zero_state else state), self.conv_hid.weight
            device = u.device.type
            plain_dtype = contextlib.nullcontext()
            if torch.is_autocast_enabled(device):
                # What autocast would do to the step's convolution: run it in the autocast
                # dtype (the add and the activation then follow it, as on the plain path).
                dtype = torch.get_autocast_dtype(device)
                u, weight = u.to(dtype), weight.to(dtype)
                h0 = None if h0 is None else h0.to(dtype)
                plain_dtype = torch.autocast(device, enabled=False)
            with plain_dtype:
                out = VanillaRecurrence.apply(u, h0, weight, self.flow.hidden_shifts(u.device),
                                              self.nonlinearity, keep, offsets)
            return (out, out[:, -1]) if keep else (None, out)
        outputs = []
        for t in range(u.shape[1]):
            state = self.step(u[:, t], state, hidden_weight,
                              None if offsets is None else offsets[:, t])
            if keep:
                outputs.append(state[0] if self.cell == "lstm" else state)
        return (torch.stack(outputs, dim=1) if keep else None), state

    def step(self, u: Tensor, state, hidden_weight: Tensor | None = None,
             offset: Tensor | None = None):
        """Advance one frame given its precomputed input term ``u`` ``(B, 1 or V, G·C_h, H, W)``
        (and, optionally, :meth:`hidden_weight`; ``offset`` ``(B, 2)``: the transport is
        ``S_{ν + d_b}``)."""
        moved = {} if offset is None else {"offset": offset}
        if self.cell == "lstm":
            h_prev, c_prev = state
        else:
            h_prev = state
        B, V, C, H, W = h_prev.shape
        if self.fused_padding:
            p = self.conv_hid.padding[0]
            hp = self.transport(h_prev, pad=p, **moved)  # S_ν h_{t-1}(ν), padded
            a = F.conv2d(hp.view(B * V, C, H + 2 * p, W + 2 * p), self.conv_hid.weight,
                         self.conv_hid.bias)
            hs = hp[..., p : p + H, p : p + W]  # S_ν h_{t-1}(ν), a view
        else:
            hs = self.transport(h_prev, **moved)  # S_ν h_{t-1}(ν): (B, V, C, H, W)
            hs_flat = hs.reshape(B * V, C, H, W)  # 'b v c h w -> (b v) c h w'
            # With a prebuilt kernel (C_N convolutions) the inner call skips the input
            # checks of the public forward: hs_flat is the cell's own state.
            a = (self.conv_hid(hs_flat) if hidden_weight is None
                 else self.conv_hid._conv(hs_flat, hidden_weight))
        a = a.view(B, V, -1, H, W)  # (B, V, G·C, H, W)
        if self.cell == "rnn":
            return self._phi(u + a)
        if self.cell == "gru":
            uz, ur, un = u.chunk(3, dim=2)
            az, ar, an = a.chunk(3, dim=2)
            z = torch.sigmoid(uz + az)
            r = torch.sigmoid(ur + ar)
            n = self._phi(un + r * an)
            return torch.lerp(n, hs, z)  # (1 − z) ⊙ n + z ⊙ S_ν h
        i, f, g, o = (u + a).chunk(4, dim=2)
        cs = self.transport(c_prev, **moved)  # S_ν c_{t-1}(ν)
        c = torch.sigmoid(f) * cs + torch.sigmoid(i) * self._phi(g)
        h = torch.sigmoid(o) * self._phi(c)
        return h, c

    def forward(self, x: Tensor, state=None):
        """One step on a single frame.

        Shapes: x ``(B, C_in, H, W)`` (``(B, V, C_in, H, W)`` with ``lifted_input``);
        state ``(B, V, C_h, H, W)`` or None (zeros); returns the new state.
        """
        expected = 5 if self.lifted_input else 4
        layout = "(B, V, C, H, W)" if self.lifted_input else "(B, C, H, W)"
        if isinstance(x, Tensor) and x.dim() != expected:
            raise ValueError(f"FlowRNNCell expects one frame {layout}; got {tuple(x.shape)}")
        check_input(x, self, layout, channels=self.in_channels, who="FlowRNNCell")
        if state is None:
            state = self.initial_state(x.shape[0], x.shape[-2], x.shape[-1], x)
        return self.step(self.input_term(x.unsqueeze(1))[:, 0], state)

