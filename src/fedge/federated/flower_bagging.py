"""Federated bagging on Flower: each SuperNode fits trees on its rows, the server joins them.

One exchange (``train.fedge_bagging``): the server sends each node the federation's label set,
the forest's settings and the node's own seed (spawned from the run's seed in client order,
as :func:`~fedge.federated.trees_bagging.federated_bagging` spawns them); the node fits
:func:`~fedge.federated.trees_bagging.fit_client_trees` on its CSV and replies with its trees
as a fedge lite binary (checked by the same reader that loads files, never unpickled) or, if
it holds a single label, that label's one-hot row. The server checks every reply and
concatenates the trees with :func:`~fedge.federated.trees_bagging.combine_tree_models`,
weighted by rows or equally. A node that does not answer or sends something malformed is
left out (and logged); the rows never leave the nodes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedge.errors import FedgeError, InvalidInputError
from fedge.federated.flower import (
    FlowerProtocolError,
    FlowerTransport,
    NodeInfo,
    _record,
    _reply_content,
    client_app,
    federation,
    read_node_table,
)
from fedge.federated.trees_bagging import client_seeds, combine_tree_models, fit_client_trees

try:
    from flwr.app import ConfigRecord, Context, Message, RecordDict
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("fedge.federated.flower_bagging needs Flower: pip install 'fedge[flower]'") \
        from exc

__all__ = ["BaggingRun", "bagging_estimator", "run_bagging", "write_bagging_outputs"]

log = logging.getLogger("fedge.federated")

BAGGING = "train.fedge_bagging"
RECORD = "fedge.bagging"
DEFAULT_TREES = 20


def bagging_estimator(classification: bool, n_estimators: int, max_depth: int) -> Any:
    """The forest each node fits: ``n_estimators`` trees (0: 20), depth ``max_depth``
    (0: unlimited), at least 2 rows per leaf (as the in-process default)."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestClassifier if classification else RandomForestRegressor
    return cls(n_estimators=n_estimators or DEFAULT_TREES, max_depth=max_depth or None,
               min_samples_leaf=2)


@dataclass
class BaggingRun:
    """The joined model and who is in it."""

    model: Any
    clients: list[str]
    rows: list[int]
    rejected: dict[str, str] = field(default_factory=dict)  # client -> why it is left out

    def history(self) -> dict[str, Any]:
        return {"clients": self.clients, "rows": self.rows, "rejected": self.rejected}


def _settings(cfg: Mapping[str, Any], nodes: Mapping[str, NodeInfo]) -> dict[str, Any]:
    n_features, classes = federation(cfg, nodes)
    if classes is not None and len(classes) < 2:
        raise InvalidInputError(f"bagging a classifier needs at least two labels, got {classes}")
    weights = str(cfg["bagging-weights"])
    if weights not in ("rows", "equal"):
        raise InvalidInputError(f"bagging-weights must be 'rows' or 'equal', got {weights!r}")
    return {
        "classes": classes,
        "n_estimators": int(cfg["n-estimators"]),
        "max_depth": int(cfg["max-depth"]),
        "weights": weights,
        "seed": int(cfg["seed"]),
        "n_features": n_features,
    }


def run_bagging(
    transport: FlowerTransport, cfg: Mapping[str, Any], nodes: Mapping[str, NodeInfo]
) -> BaggingRun:
    """The ServerApp's bagging run (``model = "bagging"``): one exchange, then the join."""
    s = _settings(cfg, nodes)
    ids = sorted(nodes)
    seeds = client_seeds(s["seed"], len(ids))
    messages = {}
    for i, cid in enumerate(ids):
        messages[nodes[cid].node_id] = (RecordDict({RECORD: ConfigRecord({
            "classes": json.dumps(s["classes"]),
            "n_estimators": s["n_estimators"],
            "max_depth": s["max_depth"],
            "seed": seeds[i],
            "index": i,
        })}), BAGGING)
    replies = transport._exchange(messages, transport.timeout)
    models, rows, used, rejected = [], [], [], {}
    n_classes = None if s["classes"] is None else len(s["classes"])
    for cid in ids:
        try:
            body = _reply_content(replies.get(nodes[cid].node_id), transport.timeout)
            model, n_rows = _decode_trees(body, n_classes, s["n_features"])
        except (FlowerProtocolError, FedgeError) as exc:
            rejected[cid] = str(exc)
            log.warning("fedge: bagging leaves out %r: %s", cid, exc)
            continue
        models.append(model)
        rows.append(n_rows)
        used.append(cid)
    if not models:
        raise InvalidInputError(f"no SuperNode sent usable trees: {rejected}")
    classes = s["classes"]
    joined = combine_tree_models(
        models, weights=s["weights"], rows=rows,
        classes=None if classes is None else np.arange(len(classes)),
    )
    if classes is not None:
        joined = dataclasses.replace(joined, classes=np.asarray(classes))
    log.warning("fedge: bagged the trees of %d clients (%s)", len(used), ", ".join(used))
    return BaggingRun(joined, used, rows, rejected)


def write_bagging_outputs(run: BaggingRun, directory: str | Path) -> Path:
    """``model.json`` (the lite IR of the joined trees) and ``history.json`` (who is in it)."""
    from fedge import save

    out = Path(directory).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    save(run.model, out / "model.json")
    (out / "history.json").write_text(json.dumps(run.history(), indent=1) + "\n")
    return out


def _decode_trees(body: RecordDict, n_classes: int | None, n_features: int) -> tuple[Any, int]:
    """A node's reply: its trees (checked by the lite reader) or one-hot row, and its rows."""
    from fedge.ir.lite import from_binary_bytes
    from fedge.ir.nodes import TreeEnsemble

    record = _record(body, RECORD, ConfigRecord)
    rows = record.get("rows")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise FlowerProtocolError(f"malformed row count {rows!r}")
    if "onehot" in record:
        onehot = np.asarray(record["onehot"], dtype=np.float64)
        if n_classes is None or onehot.shape != (n_classes,) or sorted(onehot.tolist()) != \
                [0.0] * (n_classes - 1) + [1.0]:
            raise FlowerProtocolError("a single-label client must send a one-hot row")
        return onehot, rows
    data = record.get("model")
    if not isinstance(data, bytes):
        raise FlowerProtocolError("no trees in the reply")
    model = from_binary_bytes(data)  # ModelFormatError / IntegrityError on anything malformed
    if model.n_features != n_features:
        raise FlowerProtocolError(
            f"trees over {model.n_features} features, the federation has {n_features}"
        )
    if len(model.steps) != 1 or not isinstance(model.steps[0], TreeEnsemble):
        raise FlowerProtocolError("a bagging reply must be one float tree ensemble")
    return model, rows


@client_app.train("fedge_bagging")
def _node_bagging(message: Message, context: Context) -> Message:
    """The node's side: fit its forest on its CSV and send the trees (never the rows)."""
    from fedge.ir.lite import to_binary_bytes
    from fedge.ir.lower import lower

    record = _record(message.content, RECORD, ConfigRecord)
    try:
        classes = json.loads(str(record["classes"]))
        n_estimators, max_depth = int(record["n_estimators"]), int(record["max_depth"])
        seed, index = int(record["seed"]), int(record["index"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FlowerProtocolError(f"malformed bagging request: {exc}") from None
    X, y, _ = read_node_table(context.node_config)
    estimator = bagging_estimator(classes is not None, n_estimators, max_depth)
    fitted = fit_client_trees(
        X, y, estimator, classes=None if classes is None else np.asarray(classes), seed=seed,
        index=index,
    )
    reply: dict[str, Any] = {"rows": int(X.shape[0])}
    if isinstance(fitted, np.ndarray):
        reply["onehot"] = [float(v) for v in fitted]
    else:
        reply["model"] = to_binary_bytes(lower(fitted))
    return Message(RecordDict({RECORD: ConfigRecord(reply)}), reply_to=message)
