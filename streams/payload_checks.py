"""The checks of a raw payload that need no contract's builder: the envelope, and the slow path.

The envelope (size, UTF-8, nesting depth) is checked before any decoding. A payload the
fast msgspec decoder refuses is decoded again here with the standard library, to name the
precise reason: the Struct's type information (``msgspec.inspect``) is walked field by
field, so types and ranges live in one place. Repeated keys are found here too, since
the fast decoder keeps the last of them. Pure; every refusal is an
:class:`~guardstream.errors.InputError` with its reason code.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

import msgspec
import msgspec.inspect as mi

from guardstream.errors import InputError

if TYPE_CHECKING:
    from guardstream.streams.validation import Policy, _Contract, _Wire

MAX_DETAIL_CHARS = 300


def reject(reason: str, detail: str) -> InputError:
    return InputError(detail, reason=reason)


def clip(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def show(value: Any) -> str:
    """A short repr of a payload value for a detail text."""
    return clip(repr(value), 40)


def check_envelope(payload: bytes, policy: Policy) -> None:
    if len(payload) > policy.max_payload_bytes:
        raise reject("too_large", f"payload is {len(payload)} bytes, over the limit of {policy.max_payload_bytes}")
    if not payload.isascii():
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise reject("not_utf8", f"payload is not UTF-8 (byte {exc.start})") from exc
    # Every container opens with { or [, so few brackets cannot nest deeply: the
    # exact scan runs only for payloads that have many.
    if payload.count(b"{") + payload.count(b"[") > policy.max_depth:
        depth = json_depth(payload)
        if depth > policy.max_depth:
            raise reject("too_deep", f"JSON nests {depth} levels deep, over the limit of {policy.max_depth}")


# A string runs to its closing quote or, unterminated, to the end of the payload:
# a string that could end nowhere would be rescanned from every later quote.
_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)


def json_depth(payload: bytes) -> int:
    """How deep the containers of a JSON text nest, brackets inside strings not counted."""
    depth = deepest = 0
    for match in _STRING_OR_BRACKET.finditer(payload):
        token = match.group()
        if token in (b"{", b"["):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"}", b"]"):
            depth -= 1
    return deepest


# -- the slow path: standard-library JSON, then the Struct's types checked one by one ----

def _parse_int(text: str) -> int | float:
    # Python refuses to convert more than 4300 digits; such a number is out of any range anyway.
    return int(text) if len(text) <= 400 else float(text)


def _load_json(payload: bytes) -> tuple[Any, list[str]]:
    """The JSON value of a payload and the keys its top-level object repeats, with the standard library."""
    repeated: list[list[str]] = []

    def pairs_to_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        names = [name for name, _ in pairs]
        repeated.append(sorted({n for n in names if names.count(n) > 1}) if len(obj) != len(pairs) else [])
        return obj

    try:
        data = json.loads(payload.decode("utf-8"), parse_int=_parse_int, object_pairs_hook=pairs_to_dict)
    except json.JSONDecodeError as exc:
        raise reject("not_json", f"payload is not JSON: {exc.msg} at character {exc.pos}") from exc
    except (ValueError, RecursionError) as exc:
        raise reject("not_json", f"payload is not JSON ({type(exc).__name__})") from exc
    # the hook sees the top-level object last
    return data, (repeated[-1] if isinstance(data, dict) else [])


def _refuse_duplicates(repeated: list[str], contract: _Contract) -> None:
    named = [name for name in repeated if name in contract.names]
    if named:
        raise reject("duplicate_key", f"field {named[0]!r} appears more than once")


def check_no_duplicates(payload: bytes, wire: _Wire, values: tuple[Any, ...], colons: int,
                        contract: _Contract) -> None:
    """Refuse a payload that repeats a field the contract names, which the fast decoder reads last-wins.

    Cheap first (``validate`` does the first step): every key of an object is followed by one
    colon, and outside strings colons are nothing else. A payload with as many colons as the
    Struct has fields set (``values``), plus those inside an ISO time, has no key it does not
    use, so none twice. Otherwise (an unknown or null field, a nested object, a colon
    in other text) every ``"name":`` of a field the contract names is found with one regular
    expression: a key at the top level is always written so, unless escaped (``\\u``), and
    inside strings quotes are escaped, so distinct finds mean no repeat. A payload with a
    repeat there (perhaps in a nested object) is decoded exactly.
    """
    ts = wire.ts if wire.timestamp is None else wire.timestamp
    if ts.__class__ is str and colons == len(values) - values.count(None) + ts.count(":"):
        return  # an ISO time holds the usual colons in text
    if b"\\u" not in payload:
        keys = contract.key_pattern.findall(payload)
        if len(keys) == len(set(keys)):
            return
    _, repeated = _load_json(payload)
    _refuse_duplicates(repeated, contract)


def decode_slowly(payload: bytes, contract: _Contract) -> _Wire:
    data, repeated = _load_json(payload)
    if not isinstance(data, dict):
        raise reject("not_object", f"payload is a JSON {json_type(data)}, not an object")
    _refuse_duplicates(repeated, contract)
    for wire_field in contract.fields:
        name = wire_field.encode_name
        if name in data:
            _check_value(name, data[name], wire_field.type)
        elif wire_field.required:
            raise reject("missing_field", f"field {name!r} is missing")
    try:
        return msgspec.convert(data, contract.wire_type)
    except msgspec.ValidationError as exc:
        # The checks above mirror msgspec's; should they miss a case, msgspec still decides.
        raise reject("wrong_type", f"payload does not fit the contract: {exc}") from exc


# The JSON values each msgspec type accepts, and how a detail names it.
_WIRE_TYPES: dict[type, tuple[tuple[type, ...], str]] = {
    mi.NoneType: ((type(None),), "null"), mi.BoolType: ((bool,), "true or false"),
    mi.IntType: ((int,), "an integer"), mi.FloatType: ((int, float), "a number"),
    mi.StrType: ((str,), "a string"), mi.DictType: ((dict,), "an object"),
}


def _matches(value: Any, expected: mi.Type) -> bool:
    accepted, _ = _WIRE_TYPES[type(expected)]
    # bool is an int to Python but not a number to JSON
    return isinstance(value, accepted) and (not isinstance(value, bool) or bool in accepted)


def _check_value(name: str, value: Any, expected: mi.Type) -> None:
    if isinstance(expected, mi.AnyType):
        return  # the builder decides
    members = expected.types if isinstance(expected, mi.UnionType) else (expected,)
    for member in members:
        if _matches(value, member):
            break
    else:
        words = " or ".join(_WIRE_TYPES[type(m)][1] for m in members)
        raise reject("wrong_type", f"{name} must be {words}, not {json_type(value)}")
    if isinstance(member, (mi.IntType, mi.FloatType)):
        _check_number(name, value, member)
    elif isinstance(member, mi.DictType):
        for key, item in value.items():
            _check_value(f"{name}[{show(key)}]", item, member.value_type)


def _check_number(name: str, value: float, bounds: mi.IntType | mi.FloatType) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise reject("not_finite", f"{name} is not a finite number")
    if ((bounds.ge is not None and value < bounds.ge) or (bounds.gt is not None and value <= bounds.gt)
            or (bounds.le is not None and value > bounds.le) or (bounds.lt is not None and value >= bounds.lt)):
        low = f"[{bounds.ge}" if bounds.ge is not None else f"({bounds.gt}" if bounds.gt is not None else "(-inf"
        high = f"{bounds.le}]" if bounds.le is not None else f"{bounds.lt})" if bounds.lt is not None else "inf)"
        raise reject("out_of_range", f"{name} {show(value)} is outside {low}, {high}")


def json_type(value: Any) -> str:
    words = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return words.get(type(value), "null")  # json.loads makes exactly these types
