"""A registry of models by name: ``get_model(name, **cfg)``, ``list_models()``.

Built-in entries are presets of the model classes: ``grnn_*`` is the same class with the
trivial velocity set, ``grnn_plus_*`` the same with a learned transport. A model's flow
is given by ``max_speed`` (the grid {-r..r}²), ``velocities`` (an explicit list),
``angular_velocities`` with ``order`` (a :class:`~fernn.RotationFlow2D`, and optionally its
``interpolation``), or ``flow`` (any :class:`~fernn.Flow` object). A ``grnn_*`` model takes
``order`` (and ``interpolation``) for a rotation G-RNN.
"""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from .._flows import Flow, RotationFlow2D, TranslationFlow2D
from ._classifier import CNN3DClassifier, SequenceClassifier
from ._predictor import NextStepPredictor

__all__ = ["register_model", "get_model", "list_models", "model_options", "model_class"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Decorator: register ``builder(**cfg) -> nn.Module`` under ``name``."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def _builder(name: str) -> Callable[..., nn.Module]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def model_options(name: str) -> dict:
    """The configuration keys of a model and their defaults (``inspect.Parameter.empty`` if required)."""
    sig = inspect.signature(_builder(name))
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def model_class(name: str) -> type | None:
    """The class a registered model builds (``None`` if its builder does not say: a
    builder may set ``builder.model_class``; the built-in presets do)."""
    return getattr(_builder(name), "model_class", None)


def get_model(name: str, **cfg) -> nn.Module:
    """Build the model registered as ``name``; unknown names or keys raise ``ValueError``."""
    builder = _builder(name)
    valid = model_options(name)
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for model {name!r}; valid: {', '.join(sorted(valid))}"
        )
    return builder(**cfg)


def _resolve_flow(max_speed, velocities, flow, angular_velocities=None, order=None,
                  interpolation=None) -> Flow:
    given = [k for k, v in (("max_speed", max_speed), ("velocities", velocities), ("flow", flow),
                            ("angular_velocities", angular_velocities)) if v is not None]
    if len(given) > 1:
        raise ValueError(
            f"give only one of max_speed, velocities, angular_velocities, flow; got {given}"
        )
    if order is not None and angular_velocities is None:
        raise ValueError("order goes with angular_velocities (a rotation flow)")
    if interpolation is not None and angular_velocities is None:
        raise ValueError("interpolation goes with angular_velocities (a rotation flow)")
    if angular_velocities is not None:
        return RotationFlow2D(angular_velocities, order=36 if order is None else order,
                              interpolation=interpolation or "bilinear")
    if flow is not None:
        if not isinstance(flow, Flow):
            raise TypeError(f"flow must be a fernn Flow, got {flow!r}")
        return flow
    if velocities is not None:
        return TranslationFlow2D(velocities=velocities)
    return TranslationFlow2D(max_speed=max_speed)


def _preset(name: str, cls: type, *, fixed: dict, default_speed: int | None, doc: str) -> None:
    """Register ``cls`` under ``name`` with some arguments fixed and a default flow."""
    params = [
        p for p in inspect.signature(cls).parameters.values()
        if p.name != "flow" and p.name not in fixed
    ]
    takes_flow = "flow" in inspect.signature(cls).parameters
    if takes_flow:
        names = ("max_speed", "velocities", "angular_velocities", "order", "interpolation",
                 "flow")
        if default_speed is None:
            # a G-RNN: V = {0} of translations, or of rotations of C_N
            names = ("order", "interpolation")
        params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None)
                   for n in names]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]

    def build(**cfg) -> nn.Module:
        kwargs = dict(fixed)
        if takes_flow:
            if default_speed is None:  # the trivial velocity set: a G-RNN
                order = cfg.pop("order", None)
                interpolation = cfg.pop("interpolation", None)
                if interpolation is not None and order is None:
                    raise ValueError("interpolation goes with order (a rotation G-RNN)")
                kwargs["flow"] = (TranslationFlow2D(max_speed=0) if order is None
                                  else RotationFlow2D([0], order=order,
                                                      interpolation=interpolation or "bilinear"))
            else:
                spec = {n: cfg.pop(n, None) for n in
                        ("max_speed", "velocities", "flow", "angular_velocities", "order",
                         "interpolation")}
                if all(spec[n] is None for n in ("max_speed", "velocities", "flow",
                                                 "angular_velocities")):
                    spec["max_speed"] = default_speed
                kwargs["flow"] = _resolve_flow(**spec)
        kwargs.update(cfg)
        return cls(**kwargs)

    build.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    build.__name__ = name
    build.__doc__ = doc
    build.model_class = cls  # type: ignore[attr-defined]
    register_model(name)(build)


_preset("fernn_predictor", NextStepPredictor, fixed={}, default_speed=2,
        doc="FERNN next-step predictor (FERNN-V2^T by default; max_speed=1 gives V1^T).")
_preset("grnn_predictor", NextStepPredictor, fixed={}, default_speed=None,
        doc="G-RNN next-step predictor: V = {0}, not flow equivariant.")
_preset("grnn_plus_predictor", NextStepPredictor, fixed={"transport": "learned"}, default_speed=2,
        doc="G-RNN+ next-step predictor: learned per-velocity kernels, not equivariant.")
_preset("fernn_classifier", SequenceClassifier, fixed={}, default_speed=2,
        doc="FERNN sequence classifier (KTH, FERNN-V2^T by default).")
_preset("grnn_classifier", SequenceClassifier, fixed={}, default_speed=None,
        doc="G-RNN sequence classifier: V = {0}.")
_preset("grnn_plus_classifier", SequenceClassifier, fixed={"transport": "learned"},
        default_speed=2, doc="G-RNN+ sequence classifier: learned per-velocity kernels.")
_preset("cnn3d_classifier", CNN3DClassifier, fixed={}, default_speed=None,
        doc="3D-CNN sequence classifier baseline.")


def _world_preset(name: str, fixed: dict, default_speed: int, doc: str) -> None:
    """Register :class:`WorldModel` under ``name`` with some options fixed; the flow is
    given by ``max_speed`` (default ``default_speed``), ``velocities`` or ``flow``."""
    from ._world import WorldModel

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
              for p in inspect.signature(WorldModel).parameters.values()
              if p.name != "flow" and p.name not in fixed]
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None)
               for n in ("max_speed", "velocities", "flow")]

    def build(**cfg) -> nn.Module:
        spec = {n: cfg.pop(n, None) for n in ("max_speed", "velocities", "flow")}
        if all(v is None for v in spec.values()):
            spec["max_speed"] = default_speed
        flow = _resolve_flow(**spec)
        return WorldModel(flow=flow, **fixed, **cfg)

    build.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    build.__name__ = name
    build.__doc__ = doc
    build.model_class = WorldModel  # type: ignore[attr-defined]
    register_model(name)(build)


_world_preset("world_model", {}, 2,
              "FloWM world model (V = {-2..2}^2 and self-motion equivariance by default; "
              "rollout='aligned' or 'released', frame='egocentric' or 'allocentric').")
_world_preset("world_model_no_vc", {}, 0,
              "FloWM without velocity channels: V = {0}, the -a_t shift kept.")
_world_preset("world_model_no_sme", {"self_motion": False}, 2,
              "FloWM without self-motion equivariance: no -a_t shift, actions not read.")
_world_preset("world_model_plain", {"self_motion": False}, 0,
              "No velocity channels, no self-motion shift: a plain conv RNN on the padded view.")
_world_preset("world_model_action_concat", {"self_motion": False, "action_concat": True}, 0,
              "Action-concat baseline: V = {0}, no shift, (dy, dx) as two constant channels "
              "concatenated to the view and to the hidden state (77,184 parameters).")
