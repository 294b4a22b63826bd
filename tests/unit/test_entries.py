"""The account-wide entry limits across markets, as a table (pure)."""
from __future__ import annotations

from decimal import Decimal as D

import pytest

from entries import account_refusal
from settings import RiskSettings


@pytest.mark.parametrize("risk, open_flags, open_usd, order_usd, refused", [
    (RiskSettings(), [True, True, True], D(5000), D(200), None),
    (RiskSettings(max_open_positions=2), [True, False, False], D(200), D(60), None),
    (RiskSettings(max_open_positions=2), [True, True, False], D(260), D(40), "max_open_positions 2"),
    (RiskSettings(max_total_position_usd=D(270)), [True, False], D(200), D(60), None),
    (RiskSettings(max_total_position_usd=D(270)), [True, False], D(200), D(70), None),
    (RiskSettings(max_total_position_usd=D(270)), [True, False], D(200), D("70.01"), "max_total_position_usd"),
    (RiskSettings(max_total_position_usd=D(100)), [False, False], D(80), D(40), "max_total_position_usd"),  # in doubt
])
def test_account_refusal(risk: RiskSettings, open_flags: list[bool], open_usd: D, order_usd: D,
                         refused: str | None) -> None:
    reason = account_refusal(risk, open_flags, open_usd, order_usd)
    assert (reason is None) == (refused is None)
    if refused:
        assert refused in reason
