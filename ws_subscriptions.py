"""What the WebSocket thread subscribes to, and which of it the server has acknowledged on this connection.

Owns: `SubscriptionRegistry`: the subscriptions in sending order (trades first), the ones still
waiting for the server's `subscriptionResponse` on the current connection, the acknowledgement
timeout (re-send once, then give up), and the log lines about them (`✅ Subscribed to WebSocket
trades for BTC`, "not confirmed", "failed").
Must not: send (it says what to send), touch the queue, or decide what a failed subscription
means for the connection: the client in hyperliquid_websocket.py does that.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Mapping, Sequence

log = logging.getLogger("websocket")


def describe(sub: Mapping[str, Any]) -> str:
    """`trades for BTC`, `userFills for 0x1111…1111`: a subscription as the log names it."""
    target = sub.get("coin") or sub.get("user") or ""
    if isinstance(target, str) and target.startswith("0x") and len(target) > 12:
        target = f"{target[:6]}…{target[-4:]}"
    return f"{sub.get('type')} for {target}".rstrip(" for")


def sub_key(sub: Mapping[str, Any]) -> str:
    return json.dumps(sub, sort_keys=True, separators=(",", ":"))


class SubscriptionRegistry:
    def __init__(self, subscriptions: Sequence[Mapping[str, Any]], timeout_s: float) -> None:
        # trades first: the core feed is flowing before anything else is asked for
        self.subscriptions = sorted((dict(s) for s in subscriptions), key=lambda s: s.get("type") != "trades")
        self.timeout_s = timeout_s
        self.pending: dict[str, tuple[dict[str, Any], float, int]] = {}  # key -> (sub, sent at, tries)

    def trade_coins(self) -> set[str]:
        return {sub["coin"] for sub in self.subscriptions if sub.get("type") == "trades"}

    def subscribe_all(self, now: float) -> list[dict[str, Any]]:
        """A new connection: every subscription is sent now and awaits its acknowledgement."""
        self.pending = {sub_key(sub): (sub, now, 1) for sub in self.subscriptions}
        return self.subscriptions

    def acknowledge(self, ack: Any) -> str | None:
        """The key of the subscription a `subscriptionResponse` confirms, if it was awaited."""
        sub = ack.get("subscription") if isinstance(ack, Mapping) else None
        if not isinstance(sub, Mapping):
            return None
        key = sub_key(sub)
        if self.pending.pop(key, None) is None:
            return None
        log.info("✅ Subscribed to WebSocket %s", describe(sub))
        return key

    def overdue(self, now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Subscriptions unacknowledged past the timeout: (to re-send, now given up on)."""
        resend: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for key, (sub, sent_at, tries) in list(self.pending.items()):
            if now - sent_at < self.timeout_s:
                continue
            if tries == 1:
                log.warning("subscription %s not confirmed in %.1fs; re-sending", describe(sub), self.timeout_s)
                self.pending[key] = (sub, now, 2)
                resend.append(sub)
            else:
                log.warning("subscription %s failed: no confirmation", describe(sub))
                del self.pending[key]
                failed.append(sub)
        return resend, failed
