"""The one object that says how a federation protects privacy, and what it promises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedge.errors import InvalidInputError

__all__ = ["DifferentialPrivacy", "calibrate_privacy"]


@dataclass(frozen=True)
class DifferentialPrivacy:
    """Differential privacy settings of a federated run.

    Parameters
    ----------
    level : {"record", "client", "distributed"}
        The privacy unit. ``"record"``: DP-SGD on every client (Abadi et al. 2016):
        per-example clipping to ``clip_norm`` and Gaussian noise; the guarantee protects
        each row of each client. ``"client"``: DP-FedAvg (McMahan et al. 2018): each
        client's whole update is clipped to ``clip_norm`` and the server adds Gaussian
        noise to their sum; the guarantee protects each client's entire dataset.
        ``"distributed"``: the same unit as ``"client"``, but the noise is added by the
        clients themselves, each a share sized so the sum over the secure-aggregation
        threshold carries it (:mod:`fedge.federated.distributed_dp`); needs secure
        aggregation, and the server never sees an un-noised sum. Accounted as zCDP.
    noise_multiplier : float, optional
        Noise standard deviation over the clipping norm. When omitted it is calibrated
        from ``target_epsilon`` for the planned rounds.
    target_epsilon : float, optional
        The budget: the server refuses a round that would spend more
        (:class:`~fedge.errors.PrivacyBudgetExhausted`).
    delta : float
        The delta of (epsilon, delta)-DP.
    clip_norm : float
        L2 clipping norm (per example or per client update; the initial norm when adaptive).
    accountant : {"rdp", "pld"}
        dp-accounting's Renyi-DP or privacy-loss-distribution accountant.
    adaptive_clipping : bool
        Client level only: adapt the norm toward the ``target_quantile`` of update norms
        (Andrew et al. 2021), with a noisy count so the adaptation is private too.
    count_noise_multiplier : float, optional
        Std of the noise on the count of unclipped updates (adaptive clipping). It must
        exceed ``noise_multiplier / 2``; the update noise then grows to
        ``(z^-2 - (2 sigma_b)^-2)^(-1/2)`` so the round still costs ``z`` in total.
        Defaults to the noise multiplier (15% more update noise); Andrew et al. suggest
        clients-per-round / 20 for large cohorts.
    rounds : int, optional
        The rounds a ``target_epsilon`` is planned for. Record level: each client calibrates
        its own noise so that its rows spend the budget over that many rounds of its own
        training (a small client needs more noise than a large one). Distributed: the
        budget is split evenly over the rounds.
    """

    level: Literal["record", "client", "distributed"] = "record"
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    clip_norm: float = 1.0
    accountant: Literal["rdp", "pld"] = "rdp"
    adaptive_clipping: bool = False
    target_quantile: float = 0.5
    clip_learning_rate: float = 0.2
    count_noise_multiplier: float | None = None
    rounds: int | None = None

    def __post_init__(self) -> None:
        if self.level not in ("record", "client", "distributed"):
            raise InvalidInputError(
                f"privacy level must be 'record', 'client' or 'distributed', not {self.level!r}"
            )
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise InvalidInputError(
                "differential privacy needs a noise_multiplier or a target_epsilon to calibrate it"
            )
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise InvalidInputError(f"noise_multiplier must be > 0, got {self.noise_multiplier}")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise InvalidInputError(f"target_epsilon must be > 0, got {self.target_epsilon}")
        if not 0 < self.delta < 1:
            raise InvalidInputError(f"delta must be in (0, 1), got {self.delta}")
        if not self.clip_norm > 0:
            raise InvalidInputError(f"clip_norm must be > 0, got {self.clip_norm}")
        if self.accountant not in ("rdp", "pld"):
            raise InvalidInputError(f"accountant must be 'rdp' or 'pld', not {self.accountant!r}")
        if self.rounds is not None and self.rounds < 1:
            raise InvalidInputError(f"rounds must be at least 1, got {self.rounds}")
        if self.level == "distributed" and self.accountant != "rdp":
            raise InvalidInputError("distributed DP is accounted as zCDP: use accountant='rdp'")
        if self.adaptive_clipping and self.level != "client":
            raise InvalidInputError("adaptive clipping applies to client-level DP only")
        if not 0 < self.target_quantile < 1:
            raise InvalidInputError(
                f"target_quantile must be in (0, 1), got {self.target_quantile}"
            )


def calibrate_privacy(
    privacy: DifferentialPrivacy, *, sampling_rate: float, steps: int
) -> DifferentialPrivacy:
    """``privacy`` with the smallest noise multiplier that meets its ``target_epsilon``.

    ``sampling_rate`` and ``steps`` describe the whole run as the accountant will see it:
    client level, the fraction of clients per round and the number of rounds; record
    level, the local mini-batch sampling rate and the local steps over all rounds. A
    ``privacy`` that already has a noise multiplier is returned unchanged.
    """
    from dataclasses import replace

    from fedge.federated.privacy import noise_multiplier_for

    if privacy.noise_multiplier is not None:
        return privacy
    noise = noise_multiplier_for(
        target_epsilon=privacy.target_epsilon,
        delta=privacy.delta,
        sampling_rate=sampling_rate,
        steps=steps,
        method=privacy.accountant,
    )
    return replace(privacy, noise_multiplier=noise)
