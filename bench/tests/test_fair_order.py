"""The fair-start variant's order check is only as good as its counting: each way admission can
betray the drawn order is fed to it here (no servers) and must be counted."""

from __future__ import annotations

from bench.flash_sale.fair import DRAW_LINE, order_check

DRAWN = [f"e{i}" for i in range(10)]


def admitted(*pairs: tuple[int, int]) -> dict[str, tuple[int, str]]:
    """token -> (admitted at ms, entrant) for (drawn position, admitted at ms) pairs."""
    return {f"t{pos}": (at, DRAWN[pos]) for pos, at in pairs}


def test_admission_in_drawn_order_over_several_passes_is_in_order() -> None:
    r = order_check(DRAWN, admitted((0, 100), (1, 100), (2, 100), (3, 1100), (4, 2100)))

    assert (r["in_drawn_order"], r["admission_passes"], r["last_admitted_drawn_position"]) == (True, 3, 5)


def test_a_later_drawn_fan_admitted_before_an_earlier_one_is_an_inversion() -> None:
    r = order_check(DRAWN, admitted((0, 100), (1, 1100), (2, 100)))

    assert (r["order_inversions"], r["in_drawn_order"]) == (1, False)


def test_a_drawn_fan_skipped_while_later_ones_are_admitted_is_passed_over() -> None:
    r = order_check(DRAWN, admitted((0, 100), (2, 100), (3, 1100)))

    assert (r["passed_over"], r["in_drawn_order"]) == (1, False)


def test_an_admitted_fan_outside_the_published_draw_is_counted() -> None:
    watched = {**admitted((0, 100)), "stranger": (100, "not-drawn")}

    r = order_check(DRAWN, watched)

    assert (r["admitted_not_in_draw"], r["in_drawn_order"]) == (1, False)


def test_nobody_admitted_is_not_a_pass() -> None:
    assert order_check(DRAWN, {})["in_drawn_order"] is False


def test_the_scheduler_log_line_of_models_draws_is_recognised() -> None:
    line = "fair-start draw of concert 7: 5000 entrants, admission open after 0.001 s, published after 0.52 s"

    m = DRAW_LINE.search(line)

    assert m is not None and m.groups() == ("7", "5000", "0.001", "0.52")
