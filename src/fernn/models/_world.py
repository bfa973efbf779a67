"""FloWM: the flow-equivariant world model (Lillemark et al. 2026), 2-D, and its ablations.

An agent sees a ``w×w`` view of an ``N×N`` toroidal world and knows its own camera moves
``a_t = c_t − c_{t−1}``. The model keeps a memory map over the whole world, lifted over a
velocity set V, and moves it every step by ``ν − a_t`` (FLOWM.md §2)::

    s_t(ν) = ReLU( P(U ⋆ f_t) + W ⋆ S_{ν − a_t} s_{t−1}(ν) ),        s_{−1} = 0

``U ⋆ f_t``: 3×3 circular convolution *on the view*; ``P``: zero-pads it into the map's
top-left ``w×w`` window (the same for every ν); ``W``: circular on the ``N×N`` torus. The
readout crops that window, takes the max over V and decodes it (``decoder_layers`` ×
(3×3 conv + ReLU), a 3×3 conv to the frame's channels; circular, no biases). The
recurrence is :class:`~fernn.FlowRNN`'s own (its fused sequence path and checkpointing
over time); the shift by ``ν − a_t`` is the flow's transport with a per-sample offset
``−a_t``: one gather per step over (sample, velocity).

Rollout (predicting ``pred_len`` frames from the ground-truth future actions):

- ``rollout="aligned"`` (FLOWM.md §2, the paper's Eq. 8 order; default): frame t is decoded
  from the moved state ``S_{ν − a_t} s_{t−1}``, then written as the input of step t,
  ``ŷ_t = D(max_ν crop S_{ν − a_t} s_{t−1}(ν))``; the state recursion is that of the
  context with ``f_t`` replaced by ``ŷ_t``.
- ``rollout="released"`` (the released code): step t writes the *previous* frame (the
  last context frame, then the last prediction) with the current action, and decodes the
  result: ``s_t = ReLU(P(U ⋆ ŷ_{t−1}) + W ⋆ S_{ν − a_t} s_{t−1})``, ``ŷ_t = D(max crop s_t)``.

``frame="allocentric"`` runs the same model on a world-fixed map (FLOWM.md §3):
``A_t = S_{o_t} s_t`` with ``o_t = c_t − c_0 = Σ_{1≤k≤t} a_k``; the write and the read
windows move to ``o_t`` and the transport is the plain ``S_ν`` (no per-sample shift).
Both give the same predictions; :meth:`WorldModel.memory` returns the map in either frame.

Ablations (FLOWM.md §2): ``max_speed=0`` (no velocity channels, the −a shift kept);
``self_motion=False`` (no −a shift and the actions are not read at all);
both (a plain conv RNN on the padded view); ``action_concat=True`` (V = {0}, no shift,
(dy, dx) as two constant channels concatenated to the view and to the hidden state).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._flows import Flow, TranslationFlow2D
from .._pooling import pool_velocities
from .._rnn import FlowRNN
from .._torus import roll2d
from ._predictor import conv_decoder

__all__ = ["WorldModel", "ROLLOUTS", "FRAMES"]

ROLLOUTS = ("aligned", "released")
FRAMES = ("egocentric", "allocentric")


def _as_actions(actions: Tensor) -> Tensor:
    """Integer camera moves ``(B, T, 2)`` as long; floats must hold integers."""
    if not isinstance(actions, Tensor) or actions.dim() != 3 or actions.shape[-1] != 2:
        shape = tuple(actions.shape) if isinstance(actions, Tensor) else type(actions).__name__
        raise ValueError(f"actions must be (B, T + pred_len, 2) camera moves (dy, dx); got {shape}")
    if actions.dtype.is_floating_point:
        if not torch.equal(actions, actions.round()):
            raise ValueError("actions must be integer pixel moves (dy, dx); got fractional values")
    return actions.long()


class WorldModel(nn.Module):
    """The FloWM world model on a toroidal world (see the module docstring).

    Args:
        flow: the velocity set V (a :class:`~fernn.TranslationFlow2D`).
        hidden_channels: channels C of the memory map per velocity (paper: 64).
        world_size: N, the map's side (paper: 50).
        view_size: w, the view's side (paper: 32); ``w ≤ N``.
        decoder_layers: (3×3 conv + ReLU) blocks before the output conv (paper: 1).
        in_channels: channels of a frame (1).
        self_motion: move the map by ``−a_t`` (self-motion equivariance, SME).
        rollout: ``"aligned"`` or ``"released"``.
        frame: ``"egocentric"`` (the paper's map) or ``"allocentric"`` (world-fixed map).
        action_concat: the action-concat baseline (needs V = {0}, ``self_motion=False``).
        detach_feedback: detach each prediction before it is fed back (the released code
            does not).
        kernel_size: of U and W (3).
        checkpoint_every: checkpointing over time of the context (see :class:`~fernn.FlowRNN`).

    Shapes:
        views ``(B, T, C, w, w)``; actions ``(B, T + pred_len, 2)`` as ``(dy, dx)``, the
        camera move that produced each frame (``a_0`` is not used); returns
        ``(B, pred_len, C, w, w)``. Parameters: 74,880 for the paper's model, whatever |V|.
    """

    def __init__(
        self,
        flow: Flow,
        hidden_channels: int = 64,
        world_size: int = 50,
        view_size: int = 32,
        decoder_layers: int = 1,
        in_channels: int = 1,
        self_motion: bool = True,
        rollout: str = "aligned",
        frame: str = "egocentric",
        action_concat: bool = False,
        detach_feedback: bool = False,
        kernel_size: int = 3,
        checkpoint_every: int = 0,
    ):
        super().__init__()
        if not isinstance(flow, TranslationFlow2D):
            raise TypeError(f"the world model needs a TranslationFlow2D; got {flow!r}")
        for name, value in (("world_size", world_size), ("view_size", view_size)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if view_size > world_size:
            raise ValueError(f"view_size ({view_size}) must not exceed world_size "
                             f"({world_size}): the view is a window of the world map")
        if rollout not in ROLLOUTS:
            raise ValueError(f"rollout must be one of {ROLLOUTS}, got {rollout!r}")
        if frame not in FRAMES:
            raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
        if action_concat and (len(flow) != 1 or flow.elements[0] != (0, 0) or self_motion):
            raise ValueError("action_concat is the baseline without velocity channels or "
                             "self-motion shift: give max_speed=0 and self_motion=False")
        if frame == "allocentric" and not self_motion:
            raise ValueError("frame='allocentric' replaces the self-motion shift by moving "
                             "windows; a model with self_motion=False has no such form")
        self.world_size = int(world_size)
        self.view_size = int(view_size)
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.self_motion = bool(self_motion)
        self.rollout = rollout
        self.frame = frame
        self.action_concat = bool(action_concat)
        self.detach_feedback = bool(detach_feedback)
        extra = 2 if action_concat else 0
        self.rnn = FlowRNN(in_channels + extra, hidden_channels, flow, cell="rnn",
                           kernel_size=kernel_size, nonlinearity="relu", bias=False,
                           checkpoint_every=checkpoint_every)
        if action_concat:
            # W's two action input channels (its part acting on the concatenated (dy, dx)):
            # on constant channels with circular padding, W ⋆ a = (Σ_k W_a) · a.
            self.action_hidden = nn.Parameter(
                torch.empty(hidden_channels, 2, kernel_size, kernel_size))
            bound = 1.0 / (hidden_channels + 2) ** 0.5 / kernel_size
            nn.init.uniform_(self.action_hidden, -bound, bound)
        self.decoder = conv_decoder(hidden_channels, in_channels, decoder_layers, "circular")

    # -- pieces ----------------------------------------------------------------------------
    @property
    def flow(self) -> TranslationFlow2D:
        return self.rnn.flow

    @property
    def cell(self):
        return self.rnn.layers[0]

    def _check(self, views: Tensor, actions: Tensor, pred_len: int) -> Tensor:
        w, C = self.view_size, self.in_channels
        if not isinstance(views, Tensor) or views.dim() != 5 or views.shape[2:] != (C, w, w):
            shape = tuple(views.shape) if isinstance(views, Tensor) else type(views).__name__
            raise ValueError(f"views must be (B, T, C={C}, {w}, {w}); got {shape}")
        if isinstance(pred_len, bool) or int(pred_len) != pred_len or pred_len < 0:
            raise ValueError(f"pred_len must be a non-negative integer, got {pred_len!r}")
        actions = _as_actions(actions).to(views.device)
        B, T = views.shape[:2]
        if actions.shape[:2] != (B, T + pred_len):
            raise ValueError(f"actions must be (B, T + pred_len, 2) = ({B}, {T + pred_len}, 2)"
                             f" for views {tuple(views.shape)} and pred_len={pred_len}; got "
                             f"{tuple(actions.shape)}")
        return actions

    def positions(self, actions: Tensor) -> Tensor:
        """The camera's displacement from its start, ``o_t = Σ_{1≤k≤t} a_k`` ``(B, T, 2)``."""
        moves = actions.clone()
        moves[:, 0] = 0
        return moves.cumsum(1)

    def _offsets(self, actions: Tensor) -> Tensor | None:
        """The per-sample transport offset of each step: ``−a_t`` (egocentric with SME)."""
        if self.self_motion and self.frame == "egocentric":
            return -actions
        return None

    def _input_terms(self, frames: Tensor, actions: Tensor, pos: Tensor) -> Tensor:
        """``P(U ⋆ f_t)`` on the map for frames ``(B, T, C, w, w)``: ``(B, T, 1, C_h, N, N)``.

        Allocentric: the window sits at ``o_t``. Action concat: ``U ⋆ [f_t, a_t]`` on the
        view, plus W's action term ``(Σ_k W_a) · a_t`` everywhere (it enters the same sum).
        """
        B, T = frames.shape[:2]
        w, N = self.view_size, self.world_size
        x = frames
        if self.action_concat:
            a = actions.to(frames.dtype)[..., None, None].expand(B, T, 2, w, w)
            x = torch.cat([frames, a], dim=2)
        u = self.cell.conv_in(x.reshape(B * T, *x.shape[2:]))  # circular on the view
        u = F.pad(u, (0, N - w, 0, N - w)).view(B, T, 1, -1, N, N)  # P: top-left window
        if self.frame == "allocentric":
            u = roll2d(u, pos[:, :, None, None, :])
        if self.action_concat:
            bias = torch.einsum("cakl,bta->btc", self.action_hidden, actions.to(u.dtype))
            u = u + bias[:, :, None, :, None, None]
        return u

    def _run(self, state, frames: Tensor, actions: Tensor, pos: Tensor, keep: bool):
        """Write ``frames`` ``(B, T', C, w, w)`` into the map step by step with their actions
        ``(B, T', 2)``; ``state`` None means zeros. Returns (states or None, last state)."""
        u = self._input_terms(frames, actions, pos)
        offsets = self._offsets(actions)
        if state is None:
            return self.rnn._run_layer(self.cell, u, self.cell.initial_state(
                u.shape[0], self.world_size, self.world_size, u), keep, True, offsets)
        return self.rnn._run_layer(self.cell, u, state, keep, False, offsets)

    def _moved(self, state: Tensor, action: Tensor) -> Tensor:
        """The moved state ``S_{ν − a_t} s_{t−1}`` (``S_ν A_{t−1}`` allocentric)."""
        offset = -action if (self.self_motion and self.frame == "egocentric") else None
        return self.flow.move_hidden(state, offset=offset)

    def read(self, state: Tensor, pos: Tensor | None = None) -> Tensor:
        """Decode the view from a map ``(B, V, C_h, N, N)``: crop the window (at ``pos``
        ``(B, 2)`` on an allocentric map), max over V, decoder. Returns ``(B, C, w, w)``."""
        w = self.view_size
        if self.frame == "allocentric":
            pooled = pool_velocities(state, "max")  # (B, C_h, N, N); commutes with shifts
            window = roll2d(pooled, -pos[:, None, :])[..., :w, :w]
        else:
            window = pool_velocities(state[..., :w, :w], "max")
        return self.decoder(window)

    def decode_map(self, state: Tensor) -> Tensor:
        """The decoder run on the whole map ``(B, V, C_h, N, N) → (B, C, N, N)``: what the
        model believes lies everywhere, in the map's own frame (circular on the torus)."""
        return self.decoder(pool_velocities(state, "max"))

    # -- the model -------------------------------------------------------------------------
    def _rollout(self, views: Tensor, actions: Tensor, pred_len: int, keep: bool):
        actions = self._check(views, actions, pred_len)
        if not self.self_motion:
            # Action-blind (no SME): the actions are never read, except by the
            # action-concat baseline as input channels.
            actions = actions if self.action_concat else torch.zeros_like(actions)
        T = views.shape[1]
        pos = self.positions(actions)
        states, state = self._run(None, views, actions[:, :T], pos[:, :T], keep)
        kept = [states] if keep else []
        preds = []
        feed = views[:, -1]
        for k in range(pred_len):
            t = T + k
            a, o = actions[:, t : t + 1], pos[:, t : t + 1]
            if self.rollout == "aligned":
                y = self.read(self._moved(state, a[:, 0]), o[:, 0])
                if keep or k < pred_len - 1:
                    step_states, state = self._run(state, self._feed(y)[:, None], a, o, keep)
            else:
                step_states, state = self._run(state, feed[:, None], a, o, keep)
                y = self.read(state, o[:, 0])
                feed = self._feed(y)
            if keep:
                kept.append(step_states)
            preds.append(y)
        out = (torch.stack(preds, 1) if preds
               else views.new_zeros(views.shape[0], 0, *views.shape[2:]))
        return out, (torch.cat(kept, 1) if keep else None), pos

    def _feed(self, y: Tensor) -> Tensor:
        return y.detach() if self.detach_feedback else y

    def forward(self, views: Tensor, actions: Tensor, pred_len: int) -> Tensor:
        """Predict the next ``pred_len`` views from ``views`` ``(B, T, C, w, w)`` and the
        camera moves ``actions`` ``(B, T + pred_len, 2)``: ``(B, pred_len, C, w, w)``."""
        return self._rollout(views, actions, pred_len, keep=False)[0]

    def memory(self, views: Tensor, actions: Tensor, pred_len: int = 0,
               frame: str | None = None, decode: bool = True) -> dict:
        """The memory map after every step, context and rollout.

        Returns a dict: ``"predictions"`` ``(B, pred_len, C, w, w)``; ``"states"``
        ``(B, T + pred_len, V, C_h, N, N)``, the map after each write (in the rollout, after
        writing that step's frame: the prediction (aligned) or the previous frame
        (released)); ``"decoded"`` ``(B, T + pred_len, C, N, N)``, :meth:`decode_map` of
        each state (if ``decode``); ``"positions"`` ``(B, T + pred_len, 2)``, ``o_t``.

        ``frame`` (default: the model's): ``"egocentric"`` — the view's window is the
        map's top-left ``w×w`` corner; ``"allocentric"`` — ``A_t = S_{o_t} s_t``, fixed to
        the world: map pixel p shows world pixel ``p + c_0 − w//2`` (:func:`to_world`).

        Every state is kept: ``(T + pred_len)·|V|·C_h·N²`` values per clip (3.2 GB in float32
        for one 50 + 150-frame clip of the paper's model): use it on a few clips.
        """
        frame = self.frame if frame is None else frame
        if frame not in FRAMES:
            raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
        preds, states, pos = self._rollout(views, actions, pred_len, keep=True)
        if frame != self.frame:
            sign = 1 if frame == "allocentric" else -1
            states = roll2d(states, sign * pos[:, :, None, None, :])
        out = {"predictions": preds, "states": states, "positions": pos}
        if decode:
            B, T = states.shape[:2]
            out["decoded"] = self.decode_map(states.flatten(0, 1)).view(B, T, -1, *states.shape[-2:])
        return out


def to_world(allocentric: Tensor, view_size: int, start: Tensor | tuple = (0, 0)) -> Tensor:
    """An allocentric map ``(..., N, N)`` moved so that pixel p shows world pixel p, for a
    camera that started at ``start`` ``(2,)`` or ``(B, 2)`` (the leading axis of the maps
    being B): ``out[p] = A[p − c_0 + w//2]``."""
    start = torch.as_tensor(start, device=allocentric.device).long()
    shift = start - view_size // 2  # content moves by c_0 − w//2
    lead = allocentric.dim() - 2
    shape = (1,) * lead + (2,) if start.dim() == 1 else (-1,) + (1,) * (lead - 1) + (2,)
    return roll2d(allocentric, shift.view(shape))
