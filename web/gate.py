"""The queue-token gate: the single place every seat, reservation and payment route passes through.

Until the waiting room lands, the gate only documents where it plugs in: `queue_gate` wraps a
view and will read `X-Queue-Token`, check the token is ACTIVE for the concert being touched and
hand the user id to the view.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def queue_gate(view: F) -> F:
    """Guard a view behind an ACTIVE queue token (pass-through until the waiting room lands)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
