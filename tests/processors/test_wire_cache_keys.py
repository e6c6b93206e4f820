"""`WireEncoder` keeps the bytes of a state's identity fields (and of an update's account context) by the values
of the attributes `IDENTITY_ATTRS` (`CONTEXT_ATTRS`) name: two states equal on those must have the same fields, or
a cached record would carry another state's values. A field function that reads an attribute the key leaves out
fails here."""

from __future__ import annotations

from typing import Any

from hypothesis import given

from processors.logic.account_table import AccountState
from processors.wire import CONTEXT_ATTRS, IDENTITY_ATTRS, _context_identity, _identity_fields
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
