"""The coordinator of a federation: selects clients, validates and aggregates their updates.

>>> server = FederatedServer(initial_model=LogisticRegression(),          # doctest: +SKIP
...                          aggregation_strategy=AggregationStrategy.FED_AVG,
...                          classes=[0, 1])
>>> client.receive_global_model(server.get_global_model())              # doctest: +SKIP
>>> server.receive_update(client.train_local(epochs=5))                  # doctest: +SKIP
>>> model = server.aggregate_updates()    # a fitted scikit-learn estimator # doctest: +SKIP

Updates are validated before anything else touches them: wrong shapes or dtypes,
NaN/Inf, norms beyond ``max_update_norm``, unknown, unselected or duplicate clients and
updates for another round are rejected with a logged reason and never averaged in.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone

from fedge.errors import InvalidInputError, PrivacyBudgetExhausted, UnsupportedOperationError
from fedge.federated import checkpoint
from fedge.federated.aggregation import PlainSum, SumAggregator
from fedge.federated.client import initial_parameters
from fedge.federated.history import EarlyStopping, History, Rejection, RoundRecord
from fedge.federated.messages import ClientUpdate, FitInstructions, Parameters, copy_parameters
from fedge.federated.privacy_config import DifferentialPrivacy
from fedge.federated.secure import (
    SecureAggregation,
    SecureResult,
    SecureSession,
    make_encryption,
    unpack_sum,
)
from fedge.federated.strategies import AggregationStrategy, Strategy, make_strategy
from fedge.federated.training import (
    ModelSpec,
    check_parameters,
    estimator_from_parameters,
    spec_from_estimator,
)
from fedge.federated.transport import Transport

__all__ = ["FederatedServer"]

log = logging.getLogger("fedge.federated")


def _delta_norm(params: Parameters, reference: Parameters) -> float:
    pairs = zip(params, reference, strict=True)
    return math.sqrt(sum(float(np.sum((p - r) ** 2)) for p, r in pairs))


class FederatedServer:
    """Runs rounds of federated training; the global model is a fitted estimator throughout.

    Parameters
    ----------
    initial_model : scikit-learn estimator
        The model to train (fitted or not): LogisticRegression, LinearRegression, Ridge,
        SGDClassifier, SGDRegressor, MLPClassifier or MLPRegressor.
    aggregation_strategy : AggregationStrategy, str or Strategy
        How updates are combined (FedAvg by default).
    classes : array-like, optional
        The full label set, declared up front so clients holding only some labels train
        the same model shape. Read from a fitted ``initial_model`` when omitted.
    n_features : int, optional
        Feature count; read from a fitted ``initial_model``, or from the first update.
    strategy_options : dict, optional
        Keyword arguments of the strategy (e.g. ``{"proximal_mu": 0.1}``).
    privacy : DifferentialPrivacy, optional
        Record-level DP-SGD or client-level DP-FedAvg, with accountant and budget.
    max_update_norm : float, optional
        Updates whose L2 distance from the global model exceeds this are rejected.
    validation_data : tuple (X, y), optional
        Server-side data scoring the global model after every round.
    early_stopping : EarlyStopping, optional
    checkpoint_dir : path, optional
        The server state is saved there after every round; with ``resume=True`` a server
        starts from the saved state, so a crashed run neither loses nor repeats a round.
    clients : sequence of str, optional
        The roster; updates from other ids are rejected. Without it any id is accepted
        (each at most once per round).
    expected_clients : int, optional
        Number of clients in the federation, for client-level privacy accounting when no
        transport says it (the sampling rate is selected / expected_clients).
    aggregator : SumAggregator, optional
        How sum-based strategies obtain the weighted sum of updates (plaintext by default;
        secure aggregation plugs in here).
    secure_aggregation : SecureAggregation or str, optional
        ``"secagg"``, ``"secagg+"``, ``"ckks"`` or ``"paillier"``: the server learns only the
        sum of the clients' (clipped) updates. Needs a sum-based strategy; per-update checks
        move to the clients (they clip to ``clip_norm``). Runs through :meth:`fit`.
    random_state : int
        Seed of client selection and of server-side noise.
    """

    def __init__(
        self,
        initial_model: Any,
        aggregation_strategy: AggregationStrategy | str | Strategy = AggregationStrategy.FED_AVG,
        *,
        classes: Sequence | np.ndarray | None = None,
        n_features: int | None = None,
        strategy_options: dict[str, Any] | None = None,
        privacy: DifferentialPrivacy | None = None,
        max_update_norm: float | None = None,
        validation_data: tuple[Any, Any] | None = None,
        early_stopping: EarlyStopping | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        clients: Sequence[str] | None = None,
        expected_clients: int | None = None,
        aggregator: SumAggregator | None = None,
        secure_aggregation: SecureAggregation | str | None = None,
        random_state: int = 0,
    ) -> None:
        self.template = initial_model
        self.strategy = make_strategy(aggregation_strategy, **(strategy_options or {}))
        fitted_classes = getattr(initial_model, "classes_", None)
        self.classes = np.asarray(classes) if classes is not None else fitted_classes
        self.privacy = privacy
        self.max_update_norm = max_update_norm
        self.validation_data = validation_data
        self.early_stopping = early_stopping
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.roster = frozenset(clients) if clients is not None else None
        self.expected_clients = expected_clients
        self.aggregator = aggregator if aggregator is not None else PlainSum()
        self.secure = self._check_secure(secure_aggregation, privacy, max_update_norm)
        self._encryption: Any = None  # homomorphic keys, made at the first protected round
        self.random_state = random_state
        self.rng = np.random.default_rng(random_state)
        self.round = 1
        self.history = History()
        self.spec: ModelSpec | None = None
        self._global: Parameters | None = None
        self._pending: dict[str, ClientUpdate] = {}
        self._selected: tuple[str, ...] | None = None
        self._failed = 0
        self._started = time.perf_counter()
        self.accountant = None
        self.clipping = None
        self._available = 0
        if privacy is not None:
            self._setup_privacy(privacy)
        if n_features is None and hasattr(initial_model, "n_features_in_"):
            n_features = int(initial_model.n_features_in_)
        if n_features is not None:
            self._initialise(n_features)
        if resume and self.checkpoint_dir is not None:
            self.restore(self.checkpoint_dir)

    # -- set-up -------------------------------------------------------------------------
    def _check_secure(
        self,
        secure: SecureAggregation | str | None,
        privacy: DifferentialPrivacy | None,
        max_update_norm: float | None,
    ) -> SecureAggregation | None:
        if secure is None:
            if privacy is not None and privacy.level == "distributed":
                raise InvalidInputError(
                    "distributed DP needs secure aggregation (secure_aggregation='secagg', "
                    "'secagg+', 'ckks' or 'paillier'): clients add noise only to what is summed"
                )
            return None
        if isinstance(secure, str):
            secure = SecureAggregation(method=secure)
        if not self.strategy.sum_based:
            raise UnsupportedOperationError(
                f"under secure aggregation the server sees only the sum of the updates; "
                f"{self.strategy.name!r} needs each update. Use fedavg, fedprox, fedadam, "
                "fedyogi or fedadagrad"
            )
        if max_update_norm is not None:
            raise UnsupportedOperationError(
                "under secure aggregation the server cannot measure single updates: clients "
                "clip their own (SecureAggregation(clip_norm=...)); drop max_update_norm"
            )
        if privacy is not None and privacy.level in ("client", "distributed"):
            # the privacy guarantee's sensitivity is the clients' clipping norm
            secure = replace(secure, clip_norm=privacy.clip_norm)
        if privacy is not None and privacy.adaptive_clipping:
            raise UnsupportedOperationError(
                "adaptive clipping needs the individual update norms, which secure "
                "aggregation hides; use a fixed clip_norm"
            )
        return secure

    def _setup_privacy(self, privacy: DifferentialPrivacy) -> None:
        from fedge.federated.privacy import AdaptiveClipping, PrivacyAccountant
        from fedge.federated.record_ledger import RecordLevelLedger

        if privacy.level == "distributed":
            from fedge.federated.distributed_dp import rho_per_round

            if privacy.noise_multiplier is None and privacy.rounds is None:
                raise InvalidInputError(
                    "distributed DP with a target_epsilon needs privacy.rounds to split the "
                    "budget over (simulate fills it in)"
                )
            self.accountant = PrivacyAccountant(method="rdp", delta=privacy.delta)
            self.round_rho = (
                1.0 / (2.0 * privacy.noise_multiplier**2)
                if privacy.noise_multiplier is not None
                else rho_per_round(privacy.target_epsilon, privacy.delta, privacy.rounds)
            )
            return

        if privacy.level == "record":
            if privacy.noise_multiplier is None and privacy.rounds is None:
                raise InvalidInputError(
                    "record-level DP with a target_epsilon needs privacy.rounds: each client "
                    "calibrates its noise to spend the budget over that many rounds"
                )
            self.accountant = RecordLevelLedger(method=privacy.accountant, delta=privacy.delta)
            return
        if privacy.noise_multiplier is None:
            raise InvalidInputError(
                "client-level DP needs privacy.noise_multiplier: calibrate it for the planned "
                "rounds with fedge.federated.calibrate_privacy (simulate and the CLI do this)"
            )
        if not self.strategy.sum_based:
            raise UnsupportedOperationError(
                f"client-level DP adds noise to the sum of clipped updates; strategy "
                f"{self.strategy.name!r} does not aggregate a sum. Use fedavg, fedprox, "
                "fedadam, fedyogi or fedadagrad"
            )
        self.accountant = PrivacyAccountant(method=privacy.accountant, delta=privacy.delta)
        if privacy.adaptive_clipping:
            self.clipping = AdaptiveClipping(
                clip_norm=privacy.clip_norm,
                target_quantile=privacy.target_quantile,
                learning_rate=privacy.clip_learning_rate,
                count_noise_multiplier=(
                    privacy.count_noise_multiplier
                    if privacy.count_noise_multiplier is not None
                    else privacy.noise_multiplier
                ),
            )

    def _initialise(self, n_features: int) -> None:
        self.spec = spec_from_estimator(self.template, n_features=n_features, classes=self.classes)
        self._global = initial_parameters(self.template, self.spec)

    @property
    def global_parameters(self) -> Parameters:
        """A copy of the current global parameters."""
        if self._global is None:
            raise InvalidInputError(
                "the global model is not initialised yet: pass n_features or a fitted model"
            )
        return copy_parameters(self._global)

    @property
    def epsilon(self) -> float | None:
        """Privacy spent so far (None without differential privacy)."""
        return None if self.accountant is None else self.accountant.epsilon()

    def get_global_model(self) -> Any:
        """The global model as a fitted scikit-learn estimator.

        Before the first round of a server that does not know the feature count, this is
        the unfitted initial model; every client then initialises it identically.
        """
        if self.spec is None or self._global is None:
            model = clone(self.template)
            model.fedge_classes_ = self.classes  # the label set, for the clients' init
        else:
            model = estimator_from_parameters(self.spec, self._global, self.template)
        model.fedge_round_ = self.round
        return model

    # -- a round --------------------------------------------------------------------------
    def configure_round(self, client_ids: Sequence[str] | None = None) -> tuple[
        tuple[str, ...], FitInstructions
    ]:
        """Select this round's clients and build their instructions.

        Raises :class:`~fedge.errors.PrivacyBudgetExhausted` when the round would spend
        more privacy than ``privacy.target_epsilon``.
        """
        ids = list(client_ids if client_ids is not None else sorted(self.roster or ()))
        if not ids:
            raise InvalidInputError("no clients to select from: pass client_ids or a roster")
        plan = self.strategy.configure_round(self.round, ids, self.rng)
        self._check_budget(plan.client_ids, len(ids))
        config = dict(plan.config)
        privacy = self.privacy
        if privacy is not None and privacy.level == "record":
            config["dp_clip_norm"] = privacy.clip_norm
            if privacy.noise_multiplier is not None:
                config["dp_noise_multiplier"] = privacy.noise_multiplier
            else:  # each client calibrates its own noise to the budget (it knows its size)
                config.update(
                    dp_target_epsilon=privacy.target_epsilon,
                    dp_delta=privacy.delta,
                    dp_rounds=privacy.rounds,
                    dp_accountant=privacy.accountant,
                )
        self._selected = tuple(plan.client_ids)
        self._available = len(ids)
        self._pending.clear()
        self._failed = 0
        self._started = time.perf_counter()
        return self._selected, FitInstructions(self.round, self.global_parameters, config)

    def _client_sampling_rate(self, selected: int, available: int) -> float:
        population = self.expected_clients or available
        return min(1.0, selected / max(population, 1))

    def _check_budget(self, selected: Sequence[str], available: int) -> None:
        privacy = self.privacy
        if privacy is None or privacy.target_epsilon is None:
            return
        if privacy.level == "client":
            rate = self._client_sampling_rate(len(selected), available)
            after = self.accountant.epsilon_after(
                privacy.noise_multiplier, sampling_rate=rate, steps=1
            )
        elif privacy.level == "distributed":
            after = self.accountant.epsilon_after_zcdp(self.round_rho)
        else:
            after = self.accountant.epsilon_after_round(selected)
        if after > privacy.target_epsilon * (1 + 1e-9):
            raise PrivacyBudgetExhausted(
                f"round {self.round} would spend epsilon {after:.4g} > budget "
                f"{privacy.target_epsilon:g} (spent so far {self.accountant.epsilon():.4g}, "
                f"delta {privacy.delta:g}); stop here, or raise the noise or the budget"
            )

    def receive_update(self, update: ClientUpdate) -> bool:
        """Validate and keep ``update`` for this round; False (and a logged reason) if refused."""
        if self.secure is not None:
            raise UnsupportedOperationError(
                "under secure aggregation the server never receives a single update; run "
                "rounds with server.fit(transport, rounds) (or simulate)"
            )
        reason, params = self._validate(update)
        if reason is not None:
            client = getattr(update, "client_id", "?")
            self.history.rejections.append(Rejection(str(client), self.round, reason))
            log.warning("round %d: rejected update from %r: %s", self.round, client, reason)
            return False
        self._pending[update.client_id] = ClientUpdate(
            update.client_id, update.round, params, update.num_examples, dict(update.metrics)
        )
        return True

    def _validate(self, update: Any) -> tuple[str | None, Parameters]:
        """Why ``update`` must be refused (None if it is fine), and its parameters as fresh
        float64 arrays."""
        reason = self._reason(update)
        if reason is not None:
            return reason, []
        try:
            params = check_parameters(self.spec, update.parameters)
        except InvalidInputError as exc:
            return f"rejected parameters: {exc}", []
        if self.max_update_norm is not None:
            norm = _delta_norm(params, self._global)
            if norm > self.max_update_norm:
                return f"update norm {norm:.4g} exceeds the bound {self.max_update_norm:g}", []
        return None, params

    def _reason(self, update: Any) -> str | None:
        if not isinstance(update, ClientUpdate):
            return f"not a ClientUpdate but {type(update).__name__}"
        cid = update.client_id
        if update.round != self.round:
            return f"update for round {update.round}, the server is at round {self.round}"
        if self.roster is not None and cid not in self.roster:
            return "unknown client id"
        if self._selected is not None and cid not in self._selected:
            return "client was not selected this round"
        if cid in self._pending:
            return "duplicate update in this round"
        if not isinstance(update.num_examples, (int, np.integer)) or update.num_examples <= 0:
            return f"num_examples must be a positive integer, got {update.num_examples!r}"
        params = update.parameters
        if not isinstance(params, (list, tuple)) or not all(
            isinstance(p, np.ndarray) for p in params
        ):
            return "parameters must be a list of numpy arrays"
        bad = [p.dtype for p in params if p.dtype.kind != "f"]
        if bad:
            return f"parameters must be floating point, got dtype {bad[0]}"
        if self.spec is None and not self._initialise_from(params):
            return "wrong shapes: the first array must be the 2-D input weight matrix"
        return None

    def _initialise_from(self, params: Parameters) -> bool:
        """Learn the feature count from the first update (unfitted model, no n_features):
        the input weight matrix is (outputs, features) for linear models and (features,
        units) for MLPs. False when the update has no such matrix."""
        if not params or params[0].ndim != 2 or 0 in params[0].shape:
            return False
        probe = spec_from_estimator(self.template, n_features=1, classes=self.classes)
        first = params[0]
        self._initialise(int(first.shape[0] if probe.kind.is_mlp else first.shape[1]))
        return True

    def record_failure(self, client_id: str, reason: str) -> None:
        """Note a selected client that raised, timed out or dropped out this round."""
        self._failed += 1
        log.info("round %d: client %r failed: %s", self.round, client_id, reason)

    def aggregate_updates(self) -> Any:
        """Combine this round's accepted updates into the new global model and return it.

        A round where no update was accepted leaves the global model unchanged (and is
        recorded as such).
        """
        if self._global is None:
            raise InvalidInputError("no update received and no model to keep: nothing to aggregate")
        order = self._selected or tuple(sorted(self._pending))
        updates = [self._pending[c] for c in order if c in self._pending]
        start = self._global
        norms = [_delta_norm(u.parameters, start) for u in updates]
        if updates:
            self._global = self._aggregate(updates, norms)
        self._record_round(updates, norms)
        self.round += 1
        self._pending.clear()
        self._selected = None
        if self.checkpoint_dir is not None:
            self.save_checkpoint(self.checkpoint_dir)
        return self.get_global_model()

    def _aggregate(self, updates: list[ClientUpdate], norms: list[float]) -> Parameters:
        privacy = self.privacy
        if privacy is None or privacy.level == "record":
            if self.strategy.sum_based:
                weights = self.strategy.client_weights(updates)
                payloads = [self.aggregator.encode(u, float(w)) for u, w in zip(
                    updates, weights, strict=True)]
                total, weight = self.aggregator.aggregate(payloads)
                new = self.strategy.aggregate_sum(self.round, self._global, total, weight)
            else:
                new = self.strategy.aggregate(self.round, self._global, updates, self.rng)
            if privacy is not None:
                self._account_record_level(updates)
            return new
        from fedge.federated.privacy import dp_fedavg_aggregate

        selected = len(self._selected) if self._selected else len(updates)
        clip = self.clipping.clip_norm if self.clipping else privacy.clip_norm
        noise = privacy.noise_multiplier
        if self.clipping is not None:
            noise = self.clipping.effective_noise_multiplier(noise)
        averaged, _ = dp_fedavg_aggregate(
            self._global,
            [u.parameters for u in updates],
            clip_norm=clip,
            noise_multiplier=noise,
            expected_clients=selected,
            rng=self.rng,
        )
        if self.clipping is not None:
            self.clipping.update(norms, rng=self.rng, expected_clients=selected)
        rate = self._client_sampling_rate(selected, self._available or selected)
        self.accountant.record(privacy.noise_multiplier, sampling_rate=rate, steps=1)
        # The noisy mean model stands in for the weighted mean the strategy would compute,
        # so server optimizers (FedAdam...) compose with client-level DP unchanged.
        return self.strategy.aggregate_sum(self.round, self._global, averaged, 1.0)

    def _account_record_level(self, updates: list[ClientUpdate]) -> None:
        for u in updates:
            self.accountant.record(
                u.client_id,
                float(u.metrics.get("noise_multiplier", 0.0)),
                sampling_rate=float(u.metrics.get("sampling_rate", 1.0)),
                steps=int(u.metrics.get("steps", 1)),
            )

    def _record_round(
        self,
        updates: list[ClientUpdate],
        norms: list[float],
        *,
        participants: tuple[str, ...] | None = None,
        extra: dict[str, float] | None = None,
    ) -> None:
        metrics = self.evaluate()
        losses = [u.metrics["loss_after"] for u in updates if "loss_after" in u.metrics]
        if losses:
            metrics["train_loss"] = float(np.average(losses, weights=[
                u.num_examples for u in updates if "loss_after" in u.metrics
            ]))
        metrics.update(extra or {})
        if participants is None:
            participants = tuple(u.client_id for u in updates)
        selected = len(self._selected) if self._selected else len(participants)
        record = RoundRecord(
            round=self.round,
            selected=selected,
            accepted=len(participants),
            rejected=sum(r.round == self.round for r in self.history.rejections),
            failed=self._failed,
            mean_update_norm=float(np.mean(norms)) if norms else math.nan,
            max_update_norm=float(np.max(norms)) if norms else math.nan,
            epsilon=self.epsilon,
            seconds=time.perf_counter() - self._started,
            metrics=metrics,
            participants=participants,
        )
        self.history.rounds.append(record)

    def evaluate(self) -> dict[str, float]:
        """Validation metrics of the current global model (empty without validation data)."""
        metrics: dict[str, float] = {}
        if self.validation_data is not None and self._global is not None:
            X, y = self.validation_data
            model = estimator_from_parameters(self.spec, self._global, self.template)
            if self.classes is not None:
                metrics["accuracy"] = float(np.mean(model.predict(X) == np.asarray(y)))
                if hasattr(model, "predict_proba"):
                    from sklearn.metrics import log_loss

                    metrics["log_loss"] = float(
                        log_loss(y, model.predict_proba(X), labels=model.classes_)
                    )
            else:
                from sklearn.metrics import mean_squared_error, r2_score

                predicted = model.predict(X)
                metrics["r2"] = float(r2_score(y, predicted))
                metrics["mse"] = float(mean_squared_error(y, predicted))
        if self._global is not None:
            metrics.update(self.strategy.evaluate(self.round, self.global_parameters) or {})
        return metrics

    # -- whole runs -----------------------------------------------------------------------
    def fit(
        self,
        transport: Transport,
        rounds: int,
        *,
        on_round: Callable[[RoundRecord], None] | None = None,
    ) -> History:
        """Run rounds until ``rounds`` are done (counting resumed ones), early stopping
        triggers, or the privacy budget would be exceeded; returns the history."""
        if self.spec is None:
            raise InvalidInputError("the server needs n_features (or a fitted initial model)")
        while self.round <= rounds and self.history.stop_reason is None:
            try:
                selected, instructions = self.configure_round(transport.client_ids())
            except PrivacyBudgetExhausted as exc:
                self.history.stop_reason = str(exc)
                break
            if self.secure is not None:
                self._secure_round(transport, selected, instructions)
            else:
                for outcome in transport.fit(selected, instructions, self.spec):
                    if outcome.update is None:
                        self.record_failure(outcome.client_id, outcome.failure or "no update")
                    else:
                        self.receive_update(outcome.update)
                self.aggregate_updates()
            if on_round is not None:
                on_round(self.history.rounds[-1])
            if self.early_stopping is not None and self.early_stopping.should_stop(self.history):
                self.history.stop_reason = (
                    f"early stopping: {self.early_stopping.metric} did not improve by "
                    f"{self.early_stopping.min_delta:g} in {self.early_stopping.patience} rounds"
                )
                if self.checkpoint_dir is not None:
                    self.save_checkpoint(self.checkpoint_dir)
        return self.history

    # -- secure rounds --------------------------------------------------------------------
    def _secure_session(self, selected: int) -> SecureSession:
        """This round's protection: threshold, fixed point and each client's noise share."""
        secure, privacy = self.secure, self.privacy
        distributed = privacy is not None and privacy.level == "distributed"
        sigma = 0.0
        if distributed:
            t = secure.threshold_for(selected) if secure.masking else max(
                1, math.floor(secure.threshold * selected) + 1
            )
            # continuous approximation first (it fixes the fixed-point headroom) ...
            sigma = secure.clip_norm / math.sqrt(2.0 * self.round_rho * t)
        if not secure.masking and self._encryption is None:
            self._encryption = make_encryption(secure)  # once per federation
        session = SecureSession(
            secure, self.global_parameters, round_id=self.round, selected=selected,
            noise_sigma=sigma, uniform_weight=distributed, encryption=self._encryption,
        )
        if distributed and secure.masking:
            # ... then the exact discrete Gaussian share at that precision
            from fedge.federated.distributed_dp import integer_sensitivities, noise_for_rho

            d2, d1 = integer_sensitivities(
                secure.clip_norm, session.scale_bits, self.spec.n_parameters
            )
            sigma_int = noise_for_rho(self.round_rho, t, d2, d1)
            session.noise_sigma = sigma_int / 2.0**session.scale_bits
        session.min_survivors = t if distributed else 1
        return session

    def _secure_round(
        self, transport: Transport, selected: tuple[str, ...], instructions: FitInstructions
    ) -> None:
        session = self._secure_session(len(selected))
        outcome = transport.fit_secure(selected, instructions, self.spec, session)
        for cid, reason in outcome.failures:
            self.record_failure(cid, reason)
        result, extra = outcome.result, {}
        if result is not None and len(result.survivors) < session.min_survivors:
            result, outcome_reason = None, (
                f"{len(result.survivors)} clients survived, fewer than the {session.min_survivors} "
                "the distributed noise is sized for"
            )
        else:
            outcome_reason = outcome.abort_reason
        if result is None:
            log.warning("round %d: secure aggregation aborted: %s", self.round, outcome_reason)
            extra["secure_aborted"] = 1.0
        else:
            extra["secure_seconds"] = result.seconds
            self._global = self._apply_secure_sum(result, len(selected), outcome.reports)
        self._record_round([], [], participants=() if result is None else result.survivors,
                           extra=extra)
        self.round += 1
        self._selected = None
        if self.checkpoint_dir is not None:
            self.save_checkpoint(self.checkpoint_dir)

    def _apply_secure_sum(
        self, result: SecureResult, selected: int, reports: dict[str, dict[str, float]]
    ) -> Parameters:
        privacy = self.privacy
        weighted, weight = unpack_sum(result.vector_sum, self._global)
        level = None if privacy is None else privacy.level
        if level == "record":
            self._account_record_level([
                ClientUpdate(cid, self.round, [], 1, reports.get(cid, {}))
                for cid in result.survivors
            ])
        if level in ("client", "distributed"):
            # DP-FedAvg: a fixed denominator (the selected count) bounds the sensitivity
            delta_sum = result.vector_sum[:-1]
            if level == "client":
                delta_sum = delta_sum + self.rng.normal(
                    0.0, privacy.noise_multiplier * self.secure.clip_norm, delta_sum.size
                )
                rate = self._client_sampling_rate(selected, self._available or selected)
                self.accountant.record(privacy.noise_multiplier, sampling_rate=rate, steps=1)
            else:
                self.accountant.record_zcdp(self.round_rho)
            mean = np.concatenate([delta_sum / selected, [1.0]])
            weighted, weight = unpack_sum(mean, self._global)
        return self.strategy.aggregate_sum(self.round, self._global, weighted, weight)

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly where it is."""
        return {
            "round": self.round,
            "n_features": None if self.spec is None else self.spec.n_features,
            "global": self._global,
            "strategy": self.strategy.state_dict(),
            "accountant": None if self.accountant is None else self.accountant.state_dict(),
            "clipping": None if self.clipping is None else self.clipping.state_dict(),
            "rng": self.rng.bit_generator.state,
            "history": self.history.as_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        if state["n_features"] is not None:
            self._initialise(int(state["n_features"]))
            self._global = [np.asarray(p, dtype=np.float64) for p in state["global"]]
        self.round = int(state["round"])
        self.strategy.load_state_dict(state["strategy"])
        if self.accountant is not None and state["accountant"] is not None:
            self.accountant.load_state_dict(state["accountant"])
        if self.clipping is not None and state["clipping"] is not None:
            self.clipping.load_state_dict(state["clipping"])
        self.rng.bit_generator.state = state["rng"]
        self.history = History.from_dict(state["history"])

    def save_checkpoint(self, directory: str | Path) -> Path:
        """Write the state to ``directory`` atomically."""
        return checkpoint.save_state(directory, self.state_dict(), tag=f"{self.round:06d}")

    def restore(self, directory: str | Path) -> bool:
        """Load the checkpoint in ``directory`` if there is one; True if one was loaded."""
        state = checkpoint.load_state(directory)
        if state is None:
            return False
        self.load_state_dict(state)
        log.info("resumed from %s at round %d", directory, self.round)
        return True
