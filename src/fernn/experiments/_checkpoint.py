"""Checkpoints that carry their config and version and load without unpickling code.

- Training checkpoints (Lightning's ``.ckpt``, for resuming) are written atomically — to
  a temporary file in the same directory, then renamed — and read back with
  ``torch.load(weights_only=True)``, which refuses to execute code.
- The trained model is exported as ``model.safetensors`` (weights only) beside
  ``model.json`` (the config, the fernn version); :func:`load_model` rebuilds it from the
  registry.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch
from torch import nn

from .._atomic import atomic_open
from .._version import __version__
from ._config import Config, config_from_dict

__all__ = ["atomic_torch_save", "save_model", "load_model", "read_checkpoint"]


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`~fernn._atomic.atomic_open`: never half-written."""
    with atomic_open(path) as fh:
        torch.save(obj, fh)


def save_model(model: nn.Module, cfg: Config, directory: str | os.PathLike) -> Path:
    """Write ``model.safetensors`` and ``model.json`` (config + version) into ``directory``."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"fernn_version": __version__, "config": cfg.to_dict()}
    with atomic_open(directory / "model.safetensors") as fh:
        fh.write(save(state, metadata={"fernn_version": __version__}))
    with atomic_open(directory / "model.json", "w") as fh:
        json.dump(meta, fh, indent=2)
    return directory / "model.safetensors"


def _unreadable(path: Path, exc: BaseException, what: str, hint: str = "") -> ValueError:
    if isinstance(exc, pickle.UnpicklingError):
        reason = ("refused: loading it would run code or build objects that torch.load("
                  "weights_only=True) does not allow")
    else:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return ValueError(f"{path} is not a readable {what} ({reason}); nothing was loaded"
                      + (f". {hint}" if hint else ""))


def read_checkpoint(path: str | os.PathLike, map_location="cpu", hint: str = "") -> dict:
    """A fernn training checkpoint (``.ckpt``), read with ``weights_only=True``: nothing is
    unpickled. A damaged, foreign or refused file is a ``ValueError`` naming it (and
    ``hint``, what to do about it)."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, empty, not a checkpoint, or refused
        raise _unreadable(path, exc, "fernn training checkpoint", hint) from None
    if not isinstance(ckpt, dict) or "fernn_config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a fernn training checkpoint (no fernn_config)"
                         + (f". {hint}" if hint else ""))
    return ckpt


def load_model(path: str | os.PathLike, map_location: str = "cpu") -> tuple[nn.Module, Config]:
    """Rebuild a trained model from a run directory, a ``model.safetensors`` (with its
    ``model.json``) or a training ``.ckpt``; nothing is unpickled. A damaged, foreign or
    refused file is a ``ValueError`` that names it."""
    from ._modules import build_model

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: give a run directory, a model.safetensors "
                                "or a .ckpt")
    if path.suffix == ".ckpt":
        ckpt = read_checkpoint(path, map_location)
        cfg = config_from_dict(ckpt["fernn_config"], f"the config in {path}")
        state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items()
                 if k.startswith("model.")}
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file

        meta_path = path.with_name("model.json")
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} (the config of {path.name}) is missing")
        try:
            meta = json.loads(meta_path.read_text())
            config = meta["config"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise _unreadable(meta_path, exc, "model.json (a fernn model's config)") from None
        if not isinstance(config, dict):
            raise ValueError(f"{meta_path}: its 'config' is not a table")
        cfg = config_from_dict(config, f"the config in {meta_path}")
        try:
            state = load_file(path, device=map_location)
        except Exception as exc:  # truncated or not a safetensors file
            raise _unreadable(path, exc, "safetensors file") from None
    else:
        raise ValueError(
            f"cannot load a model from {path}: give a run directory, a model.safetensors or a .ckpt"
        )
    model = build_model(cfg)
    model.load_state_dict(state, strict=True)  # a mismatch raises: never random weights
    return model, cfg
