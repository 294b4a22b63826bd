"""The REST lines' send path: what one POST costs the caller, compared between two versions of
http_line.py in one process, their rounds interleaved so that the machine's noise hits both alike.

A minimal HTTP/1.1 server in a child process answers every POST at once with `{}`. Figures, per
version and mode, in microseconds per POST, the median (min-max) over the rounds of each round's
median:
- `HttpLine kept-alive`: the order path, one kept-alive http.client connection;
- `HttpLine new connection`: the server closes after each answer, so every POST connects first
  (to 127.0.0.1: an IP literal, the local simulator's case);
- `RequestsLine kept-alive`: the requests transport (proxy, verify=False) on its pooled connection.

    python bench/line_send.py OLD/http_line.py http_line.py [--posts N] [--rounds R]

(With PYTHONPATH set so that each version's own imports resolve; run it from the repository.)
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import multiprocessing
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"


def _serve(listener: socket.socket, close_each: bool) -> None:
    """Accept connections, each answered by its own thread (the lines under test keep theirs open)."""
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_answer_all, args=(conn, close_each), daemon=True).start()


def _answer_all(conn: socket.socket, close_each: bool) -> None:
    """Answer every request on one connection at once; with `close_each`, close after the first."""
    extra = b"Connection: close\r\n\r\n{}" if close_each else b"\r\n{}"
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn, contextlib.suppress(ConnectionResetError):  # RequestsLine closes with a reset
        buffer = b""
        while chunk := conn.recv(65536):
            buffer += chunk
            while b"\r\n\r\n" in buffer:
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) < length:
                    break
                buffer = rest[length:]
                conn.sendall(_ANSWER + extra)
                if close_each:
                    return


def _server(close_each: bool) -> tuple[str, multiprocessing.Process]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    process = multiprocessing.get_context("fork").Process(target=_serve, args=(listener, close_each), daemon=True)
    process.start()
    port = listener.getsockname()[1]
    listener.close()  # the child has its own
    return f"http://127.0.0.1:{port}", process


def _load(path: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _round_us(post: Callable[[], Any], posts: int) -> float:
    """The median cost of one POST over `posts` of them, in microseconds."""
    samples = []
    for _ in range(posts):
        start = time.perf_counter_ns()
        post()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def _lines(module: ModuleType, keep_url: str, close_url: str) -> dict[str, Any]:
    import requests
    session = requests.Session()
    session.trust_env = False
    return {"HttpLine kept-alive": module.HttpLine(keep_url, 2.0),
            "HttpLine new connection": module.HttpLine(close_url, 2.0),
            "RequestsLine kept-alive": module.RequestsLine(session, keep_url, 2.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("versions", nargs="+", help="http_line.py files to compare")
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    keep_url, keep_server = _server(close_each=False)
    close_url, close_server = _server(close_each=True)
    try:
        modules = [_load(path, f"http_line_{i}") for i, path in enumerate(args.versions)]
        lines = [_lines(module, keep_url, close_url) for module in modules]
        results: dict[tuple[int, str], list[float]] = {}
        for _ in range(args.rounds):
            for i, by_mode in enumerate(lines):
                for mode, line in by_mode.items():
                    post = lambda line=line: line.post("/exchange", b'{"n":1}', 2.0)  # noqa: E731
                    post()  # warm: the kept-alive connection is open before timing
                    results.setdefault((i, mode), []).append(_round_us(post, args.posts))
        for (i, mode), rounds in results.items():
            print(f"{args.versions[i]:40} {mode:26} {statistics.median(rounds):8.1f} us"
                  f" ({min(rounds):.1f}-{max(rounds):.1f}) over {args.rounds} rounds of {args.posts}")
        for by_mode in lines:
            for line in by_mode.values():
                line.close()
    finally:
        for process in (keep_server, close_server):
            process.terminate()
            process.join(5)


if __name__ == "__main__":
    sys.exit(main())
