"""`WireEncoder` keeps the bytes of a state's identity fields (and of an update's account context) by the values
of the attributes `IDENTITY_ATTRS` (`CONTEXT_ATTRS`) name: two states equal on those must have the same fields, or
a cached record would carry another state's values. A field function that reads an attribute the key leaves out
fails here. The same for a state's readiness, kept by `readiness_key`."""

from __future__ import annotations

from typing import Any

from hypothesis import given

from processors.logic.account_table import AccountState, Readiness
from processors.wire import (
    CONTEXT_ATTRS,
    IDENTITY_ATTRS,
    _context_identity,
    _identity_fields,
    readiness_key,
    readiness_state_datum,
)
from tests.processors.state_strategies import account_states

states = account_states()


def _with_key_of(state: AccountState, source: AccountState, attrs: tuple[str, ...]) -> AccountState:
    """`state` with the keyed attributes of `source`: every other attribute `state`'s own."""
    values: dict[str, Any] = {attr: getattr(source, attr) for attr in attrs}
    return state._replace(**values)


@given(states, states)
def test_the_identity_fields_depend_on_the_keyed_attributes_only(a: AccountState, b: AccountState) -> None:
    assert _identity_fields(_with_key_of(b, a, IDENTITY_ATTRS)) == _identity_fields(a)


@given(states, states)
def test_the_context_identity_depends_on_the_keyed_attributes_only(a: AccountState, b: AccountState) -> None:
    assert _context_identity(_with_key_of(b, a, CONTEXT_ATTRS)) == _context_identity(a)


def _datum_in_order(readiness: Readiness) -> list[tuple[str, Any]]:
    """`readiness_state_datum`, its map as the (ordered) items the bytes follow."""
    return [
        (name, list(value.items()) if name == "met" else value)
        for name, value in readiness_state_datum(readiness).items()
    ]


@given(states, states)
def test_the_readiness_key_changes_with_its_datum(a: AccountState, b: AccountState) -> None:
    """A readiness whose datum differs (a field of `b`'s in `a`'s) has another `readiness_key`."""
    if a.readiness is None or b.readiness is None:
        return
    for name in Readiness._fields:
        changed = a.readiness._replace(**{name: getattr(b.readiness, name)})
        if _datum_in_order(changed) != _datum_in_order(a.readiness):
            assert readiness_key(changed) != readiness_key(a.readiness), name
