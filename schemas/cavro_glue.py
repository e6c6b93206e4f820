"""cavro, the fast Avro writer and reader of `schemas/codec.py`, and the refusal every writer of it raises.

A module of its own, kept Python: the codec is compiled by mypyc (setup.py), which builds no class nested in a
function nor one derived from cavro's (which ships no type stubs), as `_Uuid` is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, cast
from uuid import UUID

Encoder = Callable[[Mapping[str, Any]], bytes]
"""An Avro binary body from a datum; raises InvalidValue (and only that) for a value its schema cannot carry."""

Reader = Callable[[bytes], Any]
"""A datum from an Avro binary body written with the reader's own schema (bytes after it are left unread)."""


class InvalidValue(ValueError):
    """A value its schema cannot carry, whichever encoder refused it (its type name is what callers record)."""


def cavro_factory() -> tuple[Callable[[str, dict[str, Any]], Encoder], Callable[[str], Reader]] | None:
    """cavro's encoder factory and its reader factory, or None without the `speed` extra.

    Union branches may be named up front (tuple notation), as fastavro takes them; cavro's own `uuid` type,
    which parses every uuid string to check it, is replaced by fastavro's behaviour (`_Uuid`).
    """
    try:
        import cavro  # optional: the `speed` extra
    except ImportError:
        return None

    class _Uuid(cavro.CustomLogicalType):  # type: ignore[misc]  # cavro ships no type stubs
        """The `uuid` logical type as fastavro has it: a UUID written as its text, text as it is (unchecked);
        read as a UUID."""

        logical_name = "uuid"
        underlying_types = (cavro.StringType,)

        @classmethod
        def _for_type(cls, underlying: Any) -> _Uuid:
            return cls()

        def custom_encode_value(self, value: Any) -> Any:
            return str(value) if isinstance(value, UUID) else value

        def custom_decode_value(self, value: Any) -> Any:
            return UUID(value)  # as fastavro reads it

    options = cavro.Options(
        allow_tuple_notation=True,
        logical_types=(*(t for t in cavro.LOGICAL_TYPES if t is not cavro.UUIDStringType), _Uuid),
    )

    def build(text: str, parsed: dict[str, Any]) -> Encoder:
        write = cavro.Schema(text, options=options).binary_write
        new_buffer = cavro.MemoryWriter
        name = parsed.get("name", "record")
        # `binary_encode` writes into a new 4 KiB buffer, zeroed, every time: most of our records (and the parts
        # processors/wire.py writes) are a few dozen bytes. A buffer as large as this encoder's largest record so
        # far (within 4 KiB; a larger record grows it as cavro does) costs a tenth of a small record's writing.
        size = _FIRST_BUFFER

        def encode(datum: Mapping[str, Any]) -> bytes:
            nonlocal size
            buffer = new_buffer(size)
            try:
                write(buffer, datum)
            except REFUSALS as exc:
                refused = type(exc).__name__
            else:
                written: int = buffer.len
                if written > size and size < _LARGEST_BUFFER:
                    size = min(written, _LARGEST_BUFFER)
                data: bytes = buffer.buffer[:written].tobytes()  # typed, not cast: a call per record
                return data
            raise refused_value(name, refused)  # outside the handler: the writer's exception is not its context

        return encode

    reading = cavro.Options(allow_tuple_notation=True, logical_types=options.logical_types, record_decodes_to_dict=True)

    def reader(text: str) -> Reader:
        return cast(Reader, cavro.Schema(text, options=reading).binary_decode)

    return build, reader


#: The first buffer of a cavro encoder, and the largest it starts with (cavro's own size for every record).
_FIRST_BUFFER: Final = 64
_LARGEST_BUFFER: Final = 4096

# What the writers raise for a value its schema cannot carry; each becomes InvalidValue (`refused_value`).
REFUSALS: Final = (ValueError, TypeError, OverflowError, AttributeError, KeyError)


def refused_value(name: str, kind: str) -> InvalidValue:
    """The record and the writer's exception type only: both writers quote the value in some of their messages
    (`Invalid value 123 for type union`), and it is payroll data. Raised outside the `except` block, so the
    writer's exception is not kept as its context either (a traceback would print it)."""
    return InvalidValue(f"Invalid value for {name} ({kind})")
