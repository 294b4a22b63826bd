"""order_book.walk and paper fills on a book: size-aware fills across levels up to the limit,
the size-weighted average, a lagging book shifted to the last price; no fresh book, the old rule."""
from __future__ import annotations

from decimal import Decimal as D

import pytest

from order_book import Book, walk
from paper import NO_MATCH, PaperExchange
from stream_events import L2Book

THIN = Book(bids=((D("99"), D("1")), (D("98"), D("2")), (D("97"), D("5"))),
            asks=((D("101"), D("1")), (D("102"), D("2")), (D("103"), D("5"))), at=0.0)


@pytest.mark.parametrize("is_buy, size, limit, filled, avg, levels", [
    (True, D("0.5"), D("110"), D("0.5"), D("101"), 1),        # inside the touch
    (True, D("2"), D("110"), D("2"), D("101.5"), 2),          # walks two levels: (101 + 102) / 2
    (True, D("4"), D("110"), D("4"), D("102"), 3),            # (101 + 2*102 + 103) / 4
    (True, D("4"), D("102"), D("3"), D("101.66666667"), 2),   # the limit stops it: the rest is not filled
    (False, D("2"), D("90"), D("2"), D("98.5"), 2),           # a sell walks the bids down
    (False, D("1"), D("99.5"), D("0"), None, 0),              # nothing within the limit
])
def test_walk_fills_across_levels_up_to_the_limit(is_buy, size, limit, filled, avg, levels) -> None:  # type: ignore[no-untyped-def]
    got = walk(THIN, is_buy, size, limit)
    assert (got.filled, got.avg_px, got.levels) == (filled, avg, levels)


def test_a_book_behind_the_last_price_is_shifted_to_it() -> None:
    # the price fell to 95 but the book still shows bids from 99: a sell fills from 95 down, never better
    got = walk(THIN, False, D("2"), D("90"), reference_px=D("95"))
    assert (got.filled, got.avg_px) == (D("2"), D("94.5"))
    # a book already worse than the reference is taken as it is
    assert walk(THIN, False, D("2"), D("90"), reference_px=D("100")).avg_px == D("98.5")


def test_book_from_an_l2book_event_drops_the_order_counts() -> None:
    event = L2Book("BTC", ((D("99"), D("1"), 3),), ((D("101"), D("2"), 1),), 5, 6)
    assert Book.from_event(event, 7.0) == Book(((D("99"), D("1")),), ((D("101"), D("2")),), 7.0)


def test_a_paper_exit_on_a_thin_book_walks_two_levels_and_books_the_average() -> None:
    paper = PaperExchange(lambda coin: 2, book_of=lambda coin: THIN)
    result = paper.market_order("BTC", False, D("2"), D("5"), reference_px=D("99"), reduce_only=True)[0]
    assert result.kind == "filled" and result.total_size == D("2") and result.avg_px == D("98.5")
    assert PaperExchange.fee(result.total_size, result.avg_px) == D("0.088650")  # taker fee on 197
    assert paper.book_fills == 1


def test_paper_without_a_fresh_book_fills_in_full_at_the_slippage_price() -> None:
    paper = PaperExchange(lambda coin: 2, book_of=lambda coin: None)
    result = paper.market_order("BTC", False, D("2"), D("1"), reference_px=D("100"))[0]
    assert (result.kind, result.total_size, result.avg_px) == ("filled", D("2"), D("99"))


def test_paper_order_with_nothing_within_its_limit_is_not_filled() -> None:
    paper = PaperExchange(lambda coin: 2, book_of=lambda coin: THIN)
    result = paper.market_order("BTC", True, D("1"), D("0.1"), reference_px=D("99"))[0]
    assert result.kind == "error" and result.message == NO_MATCH
