"""Typed JSON: frozen dataclasses (and the enums, tuples and optionals in them) to
JSON values and back. Decoding checks every field and raises :class:`ProtocolError`
naming where the value is wrong (``heartbeat.capabilities.slots: expected an
integer``). Pure functions; a type's decoder is built once and cached."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from functools import cache
from typing import Any

from .errors import ProtocolError


def encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    return value


Decoder = typing.Callable[[Any, str], Any]  # (JSON value, where it is) -> the value


def decode(tp: Any, value: Any, where: str) -> Any:
    """``value`` (decoded JSON) as type ``tp``; ProtocolError says where it is wrong."""
    return _decoder(tp)(value, where)


@cache
def _decoder(tp: Any) -> Decoder:
    """The checking decoder of type ``tp``, built once per type (heartbeats of many
    workers are decoded every tick)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return lambda value, where: value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        inner = _decoder(next(o for o in options if o is not type(None)))
        if type(None) not in options:
            return inner
        return lambda value, where: None if value is None else inner(value, where)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass_decoder(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return lambda value, where: _enum(tp, value, where)
    if origin is tuple:
        return _tuple_decoder(typing.get_args(tp))
    if origin is dict:
        def decode_dict(value: Any, where: str) -> Any:
            if not isinstance(value, dict):
                raise ProtocolError(f"{where}: expected an object")
            return dict(value)
        return decode_dict
    return lambda value, where: _scalar(tp, value, where)


def _dataclass_decoder(tp: type) -> Decoder:
    hints = typing.get_type_hints(tp)
    fields = [(f.name, _decoder(hints[f.name]),
               f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
              for f in dataclasses.fields(tp)]

    def decode(value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object")
        kwargs = {}
        for name, decode_field, required in fields:
            if name in value:
                kwargs[name] = decode_field(value[name], f"{where}.{name}")
            elif required:
                raise ProtocolError(f"{where}: missing {name!r}")
        return tp(**kwargs)
    return decode


def _tuple_decoder(args: tuple[Any, ...]) -> Decoder:
    if len(args) == 2 and args[1] is Ellipsis:
        each = _decoder(args[0])
        items: list[Decoder] | None = None
    else:
        items = [_decoder(a) for a in args]

    def decode(value: Any, where: str) -> Any:
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: expected a list")
        if items is None:
            return tuple(each(v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(items):
            raise ProtocolError(f"{where}: expected {len(items)} items")
        return tuple(d(v, f"{where}[{i}]") for i, (d, v) in enumerate(zip(items, value)))
    return decode


def _enum(tp: type[enum.Enum], value: Any, where: str) -> Any:
    try:
        return tp(value)
    except ValueError:
        raise ProtocolError(f"{where}: unknown value {value!r}") from None


def _scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool) and not isinstance(value, tp):
        raise ProtocolError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value
