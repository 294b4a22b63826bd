"""Funding payments on the simulated exchange (pure, synchronous; no sockets).

Owns: settling one funding round of a coin over every account with a position in it (vaults
included: they are accounts), the sign rule (usdc = -szi * markPx * rate: a long pays a positive
rate, a short receives it), the rounding of a payment to USDC's 6 decimals, the recorded
`userFunding` entry and its `userEvents` form with the exchange's number formats, and the
`userFunding` time-window answer.
Must not: do I/O, push frames or read the clock: control.py passes the time in and sends the
payments to the WebSocket, info.py answers the query.

The shapes, and where each was confirmed:
- `userFunding` entry, recorded (tests/fixtures/rest/sdk_cassette_test_user_funding_history_*.json,
  mainnet 2023): `{"time": ms, "hash": "0x" + 64 hex, "delta": {"type": "funding", "coin", "usdc",
  "szi", "fundingRate", "nSamples"}}`, oldest first; usdc, szi and fundingRate are plain decimal
  strings (no exponent, trailing zeros dropped, a whole number keeps ".0": "-1768.0"); usdc at
  most 6 decimals. In those 2023 recordings (8-hourly funding) every hash is distinct and nSamples
  is an integer; today's hourly payments carry the all-zero hash and `"nSamples": null`
  (third-party API docs quoting live answers: Chainstack, Allium 2025), which is what this sends.
- The sign rule holds on every recorded entry (ARB: szi -6091.03, rate 0.0001 -> usdc +2.694388).
- `userEvents` (channel `user`, per the official SDK's `ws_msg_to_identifier` and `UserEventsMsg`):
  `{"funding": {time, coin, usdc, szi, fundingRate}}` per the official docs' `WsUserFunding`; the
  nktkas SDK's schema of the same event also requires `nSamples` (nullable), so it is sent too.
  No recording of a live funding event was found: unconfirmed beyond those two.
- How the exchange rounds a payment to 6 decimals is not documented: half-even here (unconfirmed).
"""
from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from .engine import Engine

ZERO_HASH = "0x" + "0" * 64
USDC_STEP = Decimal("0.000001")
# Official docs ("Info endpoint"): answers over a time range hold at most 500 elements; a client
# pages on with the last `time` as the next startTime.
MAX_PER_ANSWER = 500

Payment = dict[str, Any]  # one `userFunding` entry: {"time", "hash", "delta": {...}}


def wire_decimal(value: Decimal) -> str:
    """The exchange's decimal string: "0.023856", "-1768.0", "0.00001378" (never "1.378E-5")."""
    if value == 0:
        return "0.0"
    text = format(value.normalize(), "f")
    return text if "." in text else text + ".0"


def parse_rate(coin: Any, rate: Any, engine: Engine) -> Decimal:
    """The rate of a `pay_funding` request; ValueError naming what is wrong."""
    if coin not in engine.prices:
        raise ValueError(f"unknown coin {coin!r}; known: {sorted(engine.prices)}")
    try:
        value = Decimal(str(rate))
    except InvalidOperation:
        raise ValueError(f"rate {rate!r} is not a decimal number") from None
    if not value.is_finite():
        raise ValueError(f"rate {rate!r} is not a finite number")
    return value


def settle(engine: Engine, coin: str, rate: Decimal, now_ms: int) -> list[tuple[str, Payment]]:
    """One funding round at the coin's mark price: each account holding a position in `coin` has
    its payment credited to its USDC and recorded. Returns (account, payment) in account order."""
    mark = engine.prices[coin]
    paid: list[tuple[str, Payment]] = []
    for user, acct in engine.accounts.items():
        szi = acct.positions.get(coin, [Decimal(0)])[0]
        if szi == 0:
            continue
        usdc = (-szi * mark * rate).quantize(USDC_STEP, rounding=ROUND_HALF_EVEN)
        acct.usdc += usdc
        payment = {"time": now_ms, "hash": ZERO_HASH, "delta": {
            "type": "funding", "coin": coin, "usdc": wire_decimal(usdc), "szi": wire_decimal(szi),
            "fundingRate": wire_decimal(rate), "nSamples": None}}
        acct.fundings.append(payment)
        paid.append((user, payment))
    return paid


def user_event(payment: Payment) -> dict[str, Any]:
    """The `data` of the `user` channel frame for one payment:
    `{"funding": {"time": 1700000000000, "coin": "BTC", "usdc": "-0.5", "szi": "0.1",
    "fundingRate": "0.0001", "nSamples": null}}`."""
    delta = payment["delta"]
    return {"funding": {"time": payment["time"], "coin": delta["coin"], "usdc": delta["usdc"], "szi": delta["szi"],
                        "fundingRate": delta["fundingRate"], "nSamples": delta["nSamples"]}}


def in_window(payments: list[Payment], start_ms: int, end_ms: int) -> list[Payment]:
    """The `userFunding` answer: payments with start <= time <= end (both inclusive, as the docs
    say), oldest first, at most MAX_PER_ANSWER."""
    return [p for p in payments if start_ms <= p["time"] <= end_ms][:MAX_PER_ANSWER]
