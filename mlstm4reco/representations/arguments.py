"""The keyword arguments a representation takes, checked when a model is built (not at its
first fit)."""

from __future__ import annotations

import inspect

import torch

__all__ = ["MODEL_SETS", "representation_arguments", "check_representation_kwargs"]

MODEL_SETS = ("num_items", "embedding_dim", "sparse")
"""Representation arguments the model passes itself (from the data and its own arguments)."""


def representation_arguments(cls) -> set:
    """The keyword arguments a representation class takes: its constructor's, and those
    of the base classes its ``**options`` are passed on to."""
    names = set()
    for klass in cls.__mro__:
        if klass is torch.nn.Module or "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(vars(klass)["__init__"]).parameters.values()
        names |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names - {"self"}


def check_representation_kwargs(name: str, cls, kwargs) -> None:
    """Refuse, at construction rather than at the first fit, representation arguments the
    representation ``cls`` (by the name ``name``) does not take."""
    if kwargs is None:
        return
    if not isinstance(kwargs, dict):
        raise TypeError(
            f"representation_kwargs must be a dict, got {type(kwargs).__name__} {kwargs!r}"
        )
    accepted = sorted(representation_arguments(cls) - set(MODEL_SETS))
    clashes = sorted(set(kwargs) & set(MODEL_SETS))
    if clashes:
        raise ValueError(
            f"representation_kwargs {clashes}: set by the model itself (num_items from the "
            f"data; embedding_dim and sparse are ImplicitSequenceModel arguments)"
        )
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"representation {name!r} ({cls.__name__}) takes no "
            f"{unknown}; its representation_kwargs are {accepted}"
        )
