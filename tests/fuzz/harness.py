"""What every decoder fuzz test shares: the run's size, a hang guard, JSON and mutation strategies.

`make test` runs each property on a few hundred inputs from a fixed seed (derandomized, so a
failure there is the same failure on every machine). `make fuzz` sets SHOUWANG_FUZZ_EXAMPLES
(100,000) and draws from a random seed: Hypothesis prints the seed and the smallest failing
input when a property breaks.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BOUNDED_EXAMPLES = 300
EXAMPLES = int(os.environ.get("SHOUWANG_FUZZ_EXAMPLES") or BOUNDED_EXAMPLES)
# A decoder answers in microseconds; one that takes this long on one input is stuck. This is
# a hang detector, not a timing assertion.
HANG_S = 20.0

FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=EXAMPLES == BOUNDED_EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)

F = TypeVar("F", bound=Callable[..., Any])


class Hang(Exception):
    """A decoder did not return within HANG_S on one input."""


@contextmanager
def no_hang(seconds: float = HANG_S) -> Iterator[None]:
    def stuck(signum: int, frame: object) -> None:
        raise Hang(f"no answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, stuck)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fuzz(**strategies: st.SearchStrategy[Any]) -> Callable[[F], F]:
    """A decoder property over `strategies`: marked `fuzz`, with the run's settings, and each
    input under the hang guard."""

    def decorate(test: F) -> F:
        @wraps(test)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            with no_hang():
                return test(*args, **kwargs)

        return pytest.mark.fuzz(FUZZ(given(**strategies)(guarded)))  # type: ignore[no-any-return]

    return decorate


# --- inputs ---------------------------------------------------------------------------------

# orjson reads integers from -2**63 to 2**64 - 1 as int (beyond, as float). Hypothesis favours
# small integers; these are spread over every magnitude up to those ends.
# The edges that matter: 32-bit columns, JSON's safe integers, BIGINT, dates past year 9999.
INT_EDGES = (2**31 - 1, 2**31, 2**32, 2**53 + 1, 253_402_300_800_000, 2**63 - 1, 2**63,
             2**64 - 1, -(2**31) - 1, -(2**63))
wide_ints = st.sampled_from(INT_EDGES) | st.integers(0, 64).flatmap(
    lambda bits: st.integers(-(2**bits), 2**bits - 1)).filter(lambda n: -(2**63) <= n < 2**64)
json_scalars = (
    st.none()
    | st.booleans()
    | wide_ints
    | st.integers(min_value=-1000, max_value=1000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                  max_size=5),
    max_leaves=15,
)


def json_object_like(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with some of `keys` (each its own value, or any JSON value) and maybe others."""
    return st.fixed_dictionaries(
        {},
        optional={k: s | json_values for k, s in keys.items()},
    ).flatmap(lambda d: st.dictionaries(st.text(max_size=12), json_values, max_size=2)
              .map(lambda extra: {**extra, **d}))


def no_nul(value: Any) -> bool:
    """No U+0000 in any string (PostgreSQL's text holds none; the protocol refuses them)."""
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, dict):
        return all(no_nul(k) and no_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return all(no_nul(v) for v in value)
    return True


@st.composite
def nearly(
    draw: st.DrawFn, valid: dict[str, Any], others: dict[str, st.SearchStrategy[Any]] | None = None
) -> dict[str, Any]:
    """`valid` as it is, or with a few keys dropped, changed (to one of `others` or to any
    JSON value) or added: the inputs a decoder's every check must meet."""
    out = dict(valid)
    # Mostly one change: the rest still valid, so the checks after the first are reached.
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 1, 2, 3]))):
        known = sorted({*out, *(others or {})})
        key = draw(st.sampled_from(known)) if draw(st.integers(0, 9)) else draw(st.text(max_size=8))
        how = draw(st.sampled_from(["drop", "other", "other", "any"]))
        if how == "drop":
            out.pop(key, None)
        elif how == "other" and others and key in others:
            out[key] = draw(others[key])
        else:
            out[key] = draw(json_values)
    return out


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> tuple[str, bytes]:
    """`valid` with one defect: a bit flipped, cut short, bytes added, or a byte deleted."""
    how = draw(st.sampled_from(["flip", "truncate", "extend", "delete"]))
    if how == "flip":
        i = draw(st.integers(0, len(valid) - 1))
        bit = draw(st.integers(0, 7))
        return how, valid[:i] + bytes((valid[i] ^ (1 << bit),)) + valid[i + 1 :]
    if how == "truncate":
        return how, valid[: draw(st.integers(0, len(valid) - 1))]
    if how == "extend":
        return how, valid + draw(st.binary(min_size=1, max_size=20))
    i = draw(st.integers(0, len(valid) - 1))
    return how, valid[:i] + valid[i + 1 :]
