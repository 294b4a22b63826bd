"""What the tests and the benchmarks share to drive the bot and the simulator on loopback.

Owns: waiting on a condition with a deadline (`waiting`), a bot built as `trading_bot.py` builds
it and pointed at a simulator (`bot`), the fault-injecting REST proxy (`faultproxy`), a small fake
WebSocket exchange (`fake_ws`), the crash harness with its checks (`crash`), and local HTTP
receivers standing in for a webhook and Telegram's Bot API (`receivers`).
Must not: be imported by the bot's runtime modules or by `hyperliquid_sim/` (test and bench code
only; tests/unit/test_harness_boundary.py checks it), or hold pytest fixtures (those stay in the
tests' conftest.py).
"""
