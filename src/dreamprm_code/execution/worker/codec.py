"""Strict plain data: values as tagged JSON, accepting only exact builtin types.

Lists and scalars are themselves; everything else is a one-key object whose key names the
type, so tuples, sets and non-string dict keys survive exactly. Nothing a candidate defines
ever runs on the host when its values are decoded.
"""

from __future__ import annotations

import json
import math

MAX_DEPTH = 400
_SCALARS = (type(None), bool, int, float, str)


_FLAT = frozenset((type(None), bool, int, float, str))
_BIG = 10**4000


class NotPlainData(TypeError):
    """A value that is not made of builtin data types (e.g. an object with its own ``__eq__``)."""


def encode_value(value: object, depth: int = 0) -> object:
    """Turn a value into tagged JSON, accepting only exact builtin types.

    Subclasses of builtin types (``defaultdict``, numpy scalars via ``tolist``) are converted to
    their plain base first: whatever they claim, the result is plain data, so nothing the
    candidate defines ever runs on the trusted side.
    """
    if depth > MAX_DEPTH:
        raise NotPlainData("value nested too deeply")
    t = type(value)
    if t is int:
        if abs(value) >= _BIG:
            return {"bigint": hex(value)}
        return value
    if t in _SCALARS:
        return value
    if t is list:
        if all(type(v) in _FLAT for v in value) and all(-_BIG < v < _BIG for v in value if type(v) is int):
            return list(value)  # flat list of scalars: the common case, without recursion
        return [encode_value(v, depth + 1) for v in value]
    if t is tuple:
        return {"tuple": [encode_value(v, depth + 1) for v in value]}
    if t is dict:
        return {"dict": [[encode_value(k, depth + 1), encode_value(v, depth + 1)] for k, v in value.items()]}
    if t is set or t is frozenset:
        return {t.__name__: [encode_value(v, depth + 1) for v in value]}
    if t is bytes or t is bytearray:
        return {"bytes": bytes(value).hex()}
    if t is complex:
        return {"complex": [value.real, value.imag]}
    # Builtin subclasses and array-likes: convert to the plain base type, then encode strictly.
    for base in (bool, int, float, str):
        if isinstance(value, base):
            return encode_value(base(value), depth + 1)
    if isinstance(value, dict):
        return encode_value(dict(value.items()), depth + 1)
    if isinstance(value, (list, tuple, set, frozenset)):
        for base in (list, tuple, set, frozenset):
            if isinstance(value, base):
                return encode_value(base(value), depth + 1)
    tolist = getattr(type(value), "tolist", None)
    if callable(tolist):
        return encode_value(value.tolist(), depth + 1)
    raise NotPlainData(f"value of type {t.__name__} is not plain data")


def decode_value(data: object, depth: int = 0) -> object:
    """Rebuild a value from tagged JSON; anything malformed is a :class:`NotPlainData`."""
    if depth > MAX_DEPTH:
        raise NotPlainData("value nested too deeply")
    t = type(data)
    if t in _SCALARS:
        return data
    if t is list:
        return [decode_value(v, depth + 1) for v in data]
    if t is dict and len(data) == 1:
        ((tag, body),) = data.items()
        if tag in ("tuple", "set", "frozenset") and type(body) is list:
            items = [decode_value(v, depth + 1) for v in body]
            return {"tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
        if tag == "dict" and type(body) is list:
            out = {}
            for pair in body:
                if type(pair) is not list or len(pair) != 2:
                    raise NotPlainData("malformed dict item")
                out[decode_value(pair[0], depth + 1)] = decode_value(pair[1], depth + 1)
            return out
        if tag == "bytes" and type(body) is str:
            return bytes.fromhex(body)
        if tag == "complex" and type(body) is list and len(body) == 2:
            return complex(float(body[0]), float(body[1]))
        if tag == "bigint" and type(body) is str:
            return int(body, 16)
    raise NotPlainData(f"malformed plain data: {str(data)[:80]}")


def to_json_value(value: object) -> object:
    """Plain JSON for display and majority votes: tuples/sets become lists, dict keys strings."""
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_json_value(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: to_json_value(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, complex):
        return [value.real, value.imag]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value
