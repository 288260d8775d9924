"""The file of a saved :class:`~mlstm4reco.sequence_model.ImplicitSequenceModel`: written
atomically, read with ``weights_only=True`` and checked before a model is built from it."""

from __future__ import annotations

import os
import pathlib
import pickle

import torch

from mlstm4reco.files import atomic_path

FORMAT_VERSION = 1
PARTS = ("config", "num_items", "net", "optimizer")


def first_line(error: BaseException, limit: int = 300) -> str:
    """An error's message on one line (torch's state-dict errors span several)."""
    text = " ".join(str(error).split())
    return (text[:limit] + " ...") if len(text) > limit else text or type(error).__name__


def write(path, parts: dict) -> None:
    """Write ``parts`` (:data:`PARTS`: a plain dict of tensors and numbers) to ``path``
    atomically; an OSError naming the file, with any file there before unchanged."""
    state = {"format_version": FORMAT_VERSION, **parts}
    try:
        with atomic_path(pathlib.Path(path)) as tmp:
            torch.save(state, tmp)
    except (OSError, RuntimeError) as error:  # torch reports a full disk as a RuntimeError
        raise OSError(
            f"{path}: could not write the model ({first_line(error)}); "
            "a file there before is unchanged"
        ) from error


def read(path, known_arguments: set) -> dict:
    """The parts of the model saved at ``path``, checked: its format, every part present,
    a config of ``known_arguments`` only and a sane ``num_items``; else a
    FileNotFoundError or a ValueError naming the file and what is wrong."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no saved model at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - unpickling raises many kinds
        # torch's weights-only refusal suggests weights_only=False: not for a file that is no model
        text = "" if isinstance(error, pickle.UnpicklingError) else str(error).strip()
        reason = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
        raise ValueError(
            f"{path}: not a model written by ImplicitSequenceModel.save ({reason})"
        ) from error
    if not isinstance(state, dict):
        raise ValueError(
            f"{path}: not a model written by ImplicitSequenceModel.save "
            f"(it holds a {type(state).__name__})"
        )
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unknown format version {state.get('format_version')!r}")
    missing = sorted(set(PARTS) - set(state))
    if missing:
        raise ValueError(f"{path}: not a whole saved model: no {missing}")
    if not isinstance(state["config"], dict):
        raise ValueError(
            f"{path}: the saved config is a {type(state['config']).__name__}, not a mapping"
        )
    unknown = sorted(set(state["config"]) - known_arguments)
    if unknown:
        raise ValueError(
            f"{path}: the saved config has arguments ImplicitSequenceModel does not take: {unknown}"
        )
    num_items = state["num_items"]
    if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 2:
        raise ValueError(f"{path}: num_items must be an integer of at least 2, got {num_items!r}")
    return state
