"""The privacy budget: before a round, predict what it would spend and stop if it passes ``max-epsilon``.

What one more round spends, by level:

- sample: ``steps_per_round`` more DP-SGD steps (q = 1 / ceil(N / B)) for each client that would train;
- client, central: one more step of the server's accountant at the client-sampling rate q;
- client, local: one more step at sample rate 1 for each client that would take part.

The federation's epsilon is the max over clients (sample and local) or the server's (central), so the round
is allowed only if every prediction stays within the budget. The guard is checked BEFORE the round: a run
that stops keeps its last model, whose epsilon is within the budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from fedcompress.errors import PrivacyBudgetExhausted
from fedcompress.privacy._checks import check_number
from fedcompress.privacy.accountant import Accountant

__all__ = ["BudgetCheck", "BudgetGuard", "predict_epsilon_after_round"]

ClientId = int | str


def predict_epsilon_after_round(
    accountant: Accountant, *, noise_multiplier: float, sample_rate: float, steps: int, delta: float
) -> float:
    """Epsilon ``accountant`` would report after ``steps`` more steps at ``(noise_multiplier, sample_rate)``.

    ``accountant`` is not modified (a copy is stepped).
    """
    future = accountant.copy()
    future.step(noise_multiplier, sample_rate, steps)
    return future.epsilon(delta)  # cached by history: clients with equal histories cost one computation


@dataclasses.dataclass(frozen=True)
class BudgetCheck:
    """The outcome of one budget check: whether the next round may run, and why."""

    allowed: bool
    predicted_epsilon: float
    max_epsilon: float
    delta: float
    worst: ClientId | None = None

    def describe(self) -> str:
        """One line naming the predicted epsilon, the budget and the client that would spend most."""
        who = f" (client {self.worst})" if self.worst is not None else ""
        verdict = "within" if self.allowed else "past"
        budget = f"max-epsilon {self.max_epsilon:.4g}" if self.max_epsilon > 0 else "no max-epsilon"
        return (
            f"next round would bring epsilon to {self.predicted_epsilon:.4g} at delta {self.delta:.3g}{who}, "
            f"{verdict} {budget}"
        )


class BudgetGuard:
    """Allows a round only when no predicted epsilon passes ``max_epsilon``.

    Parameters
    ----------
    max_epsilon : float
        The budget; 0 means no budget (every round allowed), as ``max-epsilon = 0`` in the config.
    delta : float
        The delta every epsilon is computed at.
    """

    def __init__(self, max_epsilon: float, *, delta: float) -> None:
        self.max_epsilon = check_number("max_epsilon (0: no budget)", max_epsilon, low=0.0, high_open=True)
        self.delta = check_number("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)

    def check(
        self,
        accountants: Mapping[ClientId, Accountant],
        *,
        noise_multiplier: float,
        sample_rate: float,
        steps: int,
    ) -> BudgetCheck:
        """Predict the next round for every accountant that would step in it (clients, or the server's).

        Pass a fresh :class:`Accountant` for a client that has not trained yet.
        """
        if not accountants:
            return BudgetCheck(True, 0.0, self.max_epsilon, self.delta)
        predictions = {
            who: predict_epsilon_after_round(
                accountant, noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps, delta=self.delta
            )
            for who, accountant in accountants.items()
        }
        worst = max(predictions, key=lambda who: predictions[who])
        allowed = self.max_epsilon == 0 or predictions[worst] <= self.max_epsilon
        return BudgetCheck(allowed, predictions[worst], self.max_epsilon, self.delta, worst)

    def ensure(
        self,
        accountants: Mapping[ClientId, Accountant],
        *,
        noise_multiplier: float,
        sample_rate: float,
        steps: int,
    ) -> BudgetCheck:
        """Like :meth:`check`, but raise ``PrivacyBudgetExhausted`` when the round is not allowed."""
        result = self.check(accountants, noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
        if not result.allowed:
            raise PrivacyBudgetExhausted(result.describe())
        return result
