"""Server checkpoints: one JSON document plus one ``.npz`` of arrays, written atomically.

A state is a nested structure of dicts, lists, strings, numbers and numpy arrays. Arrays go
to the ``.npz`` (``allow_pickle=False`` on load: a checkpoint never executes code) and are
replaced in the JSON by ``{"__array__": key}``. The JSON is replaced last with
``os.replace``, so a crash leaves either the previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from fedge.errors import ModelFormatError

__all__ = ["load_state", "save_state"]

STATE_FILE = "state.json"


def _split(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, dict):
        return {str(k): _split(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split(v, arrays) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _join(value: Any, arrays: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return np.array(arrays[value["__array__"]])
        return {k: _join(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, arrays) for v in value]
    return value


def save_state(directory: str | Path, state: dict[str, Any], *, tag: str) -> Path:
    """Write ``state`` into ``directory`` (created if needed); returns the JSON path.

    ``tag`` names the array file (e.g. the round number), so the previous one stays valid
    until the JSON that points at the new one has replaced the old JSON.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    document = _split(state, arrays)
    array_file = f"arrays-{tag}.npz"
    with open(directory / f".{array_file}.tmp", "wb") as f:
        np.savez(f, **arrays)
    os.replace(directory / f".{array_file}.tmp", directory / array_file)
    tmp = directory / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps({"arrays": array_file, "state": document}, allow_nan=True))
    os.replace(tmp, directory / STATE_FILE)
    for old in directory.glob("arrays-*.npz"):
        if old.name != array_file:
            old.unlink(missing_ok=True)
    return directory / STATE_FILE


def load_state(directory: str | Path) -> dict[str, Any] | None:
    """The state saved in ``directory``, or None when there is no checkpoint yet."""
    directory = Path(directory)
    path = directory / STATE_FILE
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text())
        with np.load(directory / document["arrays"], allow_pickle=False) as arrays:
            return _join(document["state"], {k: arrays[k] for k in arrays.files})
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFormatError(
            f"checkpoint in {directory} is unreadable ({exc}); delete it to start afresh"
        ) from None
