"""Orders whose result is unknown: the verdict from the exchange's word and the fills, and the
lookup schedule. The money rule: sizes and prices come from fills, never from the order itself,
and "the exchange never saw it" is believed only once the order can no longer arrive."""
from __future__ import annotations

from decimal import Decimal as D

import pytest

from unknown_orders import (EXPIRES_WITHIN_MAX_MS, EXPIRY_MARGIN_MS, FILLS_WAIT_MAX, LOOKUP_BACKOFF_MAX_S,
                            LOST_ORDER_GRACE_S, UnknownOrder, UnknownOrders, after_failure_s, after_wait_s, expired,
                            first_lookup_s, saved_expiry_ms, settle)

SENT_MS = 1_700_000_000_000
EXPIRES_MS = SENT_MS + 5_000


def order(purpose: str = "entry", lookups: int = 0, expires_after_ms: int | None = EXPIRES_MS) -> UnknownOrder:
    return UnknownOrder(cloid="0x" + "1" * 32, purpose=purpose, is_buy=True, size=D("0.004"),
                        notional_usd=D("200"), created_ms=SENT_MS, expires_after_ms=expires_after_ms,
                        next_lookup_s=0.0, lookups=lookups)


@pytest.mark.parametrize("status,fills,now_ms,verdict,size,avg", [
    # never seen: believed only past the expiry plus the margin
    ("unknownOid", [], EXPIRES_MS - 1, "wait", D(0), None),
    ("unknownOid", [], EXPIRES_MS + EXPIRY_MARGIN_MS - 1, "wait", D(0), None),
    ("unknownOid", [], EXPIRES_MS + EXPIRY_MARGIN_MS, "never_executed", D(0), None),
    # filled: size and average from the fills (two partial fills), never the order's limit
    ("filled", [(D("0.001"), D("50010")), (D("0.003"), D("50030"))], SENT_MS + 2000, "executed",
     D("0.004"), D("50025")),
    # an IOC that filled in part reads "canceled": the fills say how much
    ("canceled", [(D("0.001"), D("50000"))], SENT_MS + 2000, "executed", D("0.001"), D("50000")),
    ("canceled", [], SENT_MS + 2000, "not_filled", D(0), None),
    ("rejected", [], SENT_MS + 2000, "not_filled", D(0), None),
    ("marginCanceled", [], SENT_MS + 2000, "not_filled", D(0), None),
    # "filled" but the fills are not visible yet: ask again
    ("filled", [], SENT_MS + 2000, "wait", D(0), None),
    ("open", [], SENT_MS + 2000, "resting", D(0), None),
    ("triggered", [], SENT_MS + 2000, "resting", D(0), None),
])
def test_settle_table(status: str, fills: list, now_ms: int, verdict: str, size: D, avg: D | None) -> None:
    result = settle(order(), status, fills, now_ms)
    assert (result.verdict, result.filled_size, result.avg_px) == (verdict, size, avg)
    assert result.exchange_status == status


def test_filled_without_fills_is_never_taken_for_not_filled() -> None:
    # After a few lookups it is settled as filled at an unknown price: the position check decides.
    assert settle(order(lookups=FILLS_WAIT_MAX - 1), "filled", [], SENT_MS + 9000).verdict == "wait"
    assert settle(order(lookups=FILLS_WAIT_MAX), "filled", [], SENT_MS + 9000).verdict == "filled_unpriced"


def test_without_an_expiry_the_exchange_never_seeing_it_is_never_believed() -> None:
    assert settle(order(expires_after_ms=None), "unknownOid", [], SENT_MS + 3_600_000).verdict == "wait"
    assert not expired(order(expires_after_ms=None), SENT_MS + 3_600_000)


def test_first_lookup_after_the_grace() -> None:
    assert first_lookup_s(100.0) == 100.0 + LOST_ORDER_GRACE_S


def test_wait_asks_again_just_past_the_expiry() -> None:
    o = order()
    now_ms = SENT_MS + 2000
    assert after_wait_s(o, 50.0, now_ms) == pytest.approx(50.0 + (EXPIRES_MS + EXPIRY_MARGIN_MS - now_ms) / 1000)
    o.lookups = 10  # past the expiry: capped backoff
    assert after_wait_s(o, 50.0, EXPIRES_MS + EXPIRY_MARGIN_MS) == 50.0 + LOOKUP_BACKOFF_MAX_S


def test_failed_lookups_back_off_to_a_cap() -> None:
    o = order()
    delays = []
    for failures in range(1, 8):
        o.failures = failures
        delays.append(after_failure_s(o, 0.0))
    assert delays == sorted(delays) and delays[-1] == LOOKUP_BACKOFF_MAX_S and delays[0] == 1.0


def test_registry_due_purpose_and_notional() -> None:
    reg = UnknownOrders()
    a, b = order("entry"), order("exit")
    b.cloid, b.next_lookup_s = "0x" + "2" * 32, 10.0
    reg.add(a)
    reg.add(b)
    assert len(reg) == 2 and a.cloid in reg
    assert reg.due(5.0) == [a] and set(o.cloid for o in reg.due(10.0)) == {a.cloid, b.cloid}
    assert reg.has("entry") and reg.has("exit") and not reg.has("sl")
    assert reg.has("entry", coin="") and not reg.has("entry", coin="ETH") and reg.has("sl", "exit")
    assert reg.notional_usd("entry") == D("200") and reg.notional_usd("sl") == 0
    assert reg.remove(a.cloid) is a and reg.remove(a.cloid) is None and not reg.has("entry")


RESTART_MS = SENT_MS + 2_000  # the next start, 2 s after an order saved by the last run


@pytest.mark.parametrize("reserved,within_ms,expected_ms", [
    # Made just before its send, signed to expire by created + its own length (60 s, whatever the
    # config says at the restart).
    (False, 60_000, SENT_MS + 60_000),
    (False, 1_000, SENT_MS + 1_000),
    # A reserved exit cloid may have gone out any time up to the last stop, before the restart.
    (True, 60_000, RESTART_MS + 60_000),
    (True, 1_000, RESTART_MS + 1_000),
    # Saved before schema 4 (NULL): the longest any config allows, after the restart.
    (False, None, RESTART_MS + EXPIRES_WITHIN_MAX_MS),
    (True, None, RESTART_MS + EXPIRES_WITHIN_MAX_MS),
])
def test_an_order_saved_by_the_last_run_expires_by_what_it_was_signed_with(
        reserved: bool, within_ms: int | None, expected_ms: int) -> None:
    assert saved_expiry_ms(reserved, SENT_MS, within_ms, RESTART_MS) == expected_ms


def test_a_row_without_its_length_is_given_the_configs_maximum() -> None:
    assert EXPIRES_WITHIN_MAX_MS == 60_000  # config_load.py: api.order_expires_after_s <= 60
    # A wall clock set back between runs: never earlier than the order's own creation allows.
    assert saved_expiry_ms(False, SENT_MS, None, SENT_MS - 10_000) == SENT_MS + EXPIRES_WITHIN_MAX_MS
