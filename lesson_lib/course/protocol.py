"""What crosses the boundary between the grader and its sandboxed worker, and how.

The worker runs student code, so everything it sends is untrusted. It can only send *plain
data*, one JSON object per line, and the grader rebuilds every value from scratch:

* ``None``, and values whose type is *exactly* ``bool``, ``int``, ``float`` or ``str`` (a
  subclass could override ``__eq__`` and make any comparison succeed); numpy's scalar types
  (what ``np.sqrt`` or scipy return) are sent as the number they hold;
* lists, tuples and dicts with string keys, at most :data:`MAX_DEPTH` deep;
* tensors whose type is exactly ``torch.Tensor``, as their raw bytes (base64), dtype and shape.
  The grader makes a new tensor from the bytes, so nothing of the worker's object survives;
* anything else arrives as :class:`Unsupported`, which only carries
  the type's name, so a judge can say "returned ndarray, expected a torch.Tensor".

Nothing is ever unpickled. Messages (:func:`parse_event`) follow a strict schema: known
events, known fields of known types, and size limits per field; anything else raises
:class:`ProtocolError`, which the grader turns into a crashed check with the reason.

This module also holds :func:`printable`, which escapes control characters in text that came
from a submission before it is printed or written (a reason containing terminal escape
sequences could otherwise draw a fake score table).
"""

import base64
import json
import math


MAX_DEPTH = 8                 # nesting of lists and dicts in one value
MAX_ITEMS = 10_000            # entries in one list or dict
MAX_TENSOR_BYTES = 16 << 20   # bytes of one tensor
MAX_TEXT = 4000               # characters of one string inside a value
MAX_LINE = 24 << 20           # bytes of one message line (a whole check's answer: one largest tensor fits)
MAX_CONTAINERS = 200_000      # "{" and "[" in one message line: bounds the grader's memory to parse it
MAX_REASON = 2000             # characters of a reason the worker sends
MAX_TRACEBACK = 4000          # characters of a traceback the worker sends
MAX_NOTES = 200               # notes about the notebook's definitions

DTYPES = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128",
          "uint8", "int8", "int16", "int32", "int64", "bool")

RAISED_KINDS = ("not implemented", "failed", "error", "missing")


class Unsupported:
    """Stands for a value the worker could not send as plain data (a numpy array, a tensor
    subclass, a float subclass...): only its type's name crosses the boundary."""

    def __init__(self, type_name):
        self.type_name = str(type_name)

    def __repr__(self):
        return f"<{self.type_name}>"


def type_name(value):
    """The name of ``value``'s type as messages show it (``Unsupported`` shows what it stands for)."""
    return value.type_name if isinstance(value, Unsupported) else type(value).__name__


class ProtocolError(ValueError):
    """A message or value from the worker does not follow the schema."""


# --- values ------------------------------------------------------------------------------

def encode_value(value, depth=0):
    """``value`` as JSON-ready plain data (in the worker; never raises on odd input)."""
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value if kind is not str else value[:MAX_TEXT]
    if kind is int:
        return {"int": str(value)} if abs(value) < 10 ** 30 else {"unsupported": "huge int"}
    if kind is float:
        return {"float": repr(value)}
    if depth >= MAX_DEPTH:
        return {"unsupported": "too deeply nested"}
    if kind in (list, tuple):
        if len(value) > MAX_ITEMS:
            return {"unsupported": f"{kind.__name__} of {len(value)} items"}
        return {kind.__name__: [encode_value(item, depth + 1) for item in value]}
    if kind is dict:
        if len(value) > MAX_ITEMS or not all(type(k) is str for k in value):
            return {"unsupported": "dict"}
        return {"dict": {k[:MAX_TEXT]: encode_value(v, depth + 1) for k, v in value.items()}}
    scalar = _numpy_scalar(value)
    if scalar is not None:
        return encode_value(scalar, depth)
    tensor = _encode_tensor(value)
    return tensor if tensor is not None else {"unsupported": _name_of(kind)}


def _numpy_scalar(value):
    """A numpy (or scipy) scalar as the plain bool, int or float it holds, else None: a student's
    ``np.sqrt(d / 2)`` is a number like any other."""
    import sys

    numpy = sys.modules.get("numpy")
    if numpy is None or type(value) not in (numpy.bool_, numpy.float16, numpy.float32, numpy.float64,
                                            numpy.int8, numpy.int16, numpy.int32, numpy.int64,
                                            numpy.uint8, numpy.uint16, numpy.uint32, numpy.uint64):
        return None
    return bool(value) if type(value) is numpy.bool_ else \
        float(value) if type(value) in (numpy.float16, numpy.float32, numpy.float64) else int(value)


def _name_of(kind):
    try:
        return str(kind.__name__)[:100]
    except Exception:
        return "object"


def _encode_tensor(value):
    import sys

    torch = sys.modules.get("torch")
    if torch is None or type(value) is not torch.Tensor:
        return None
    tensor = value.detach().cpu().contiguous()
    dtype = str(tensor.dtype).replace("torch.", "")
    if dtype not in DTYPES or tensor.numel() * tensor.element_size() > MAX_TENSOR_BYTES:
        return {"unsupported": f"tensor of {tensor.numel()} {dtype}"}
    data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
    return {"tensor": {"dtype": dtype, "shape": list(tensor.shape),
                       "data": base64.b64encode(data).decode("ascii")}}


def decode_value(data, depth=0):
    """Rebuild a value sent by :func:`encode_value` (in the grader); raises ProtocolError."""
    if data is None or type(data) in (bool, str):
        if type(data) is str and len(data) > MAX_TEXT:
            raise ProtocolError("a string is too long")
        return data
    if type(data) is not dict or len(data) != 1 or depth > MAX_DEPTH:
        raise ProtocolError("a value is not in the expected form")
    (tag, body), = data.items()
    if tag == "int" and type(body) is str and len(body) <= 32:
        try:
            return int(body)
        except ValueError:
            raise ProtocolError("a malformed int") from None
    if tag == "float" and type(body) is str and len(body) <= 32:
        try:
            return float(body)
        except ValueError:
            raise ProtocolError("a malformed float") from None
    if tag in ("list", "tuple") and type(body) is list and len(body) <= MAX_ITEMS:
        items = [decode_value(item, depth + 1) for item in body]
        return items if tag == "list" else tuple(items)
    if tag == "dict" and type(body) is dict and len(body) <= MAX_ITEMS:
        return {_text(k): decode_value(v, depth + 1) for k, v in body.items()}
    if tag == "tensor" and type(body) is dict:
        return _decode_tensor(body)
    if tag == "unsupported" and type(body) is str:
        return Unsupported(body[:100])
    raise ProtocolError(f"a value with an unknown tag {printable(str(tag))[:40]!r}")


def _decode_tensor(body):
    import torch

    dtype, shape, data = body.get("dtype"), body.get("shape"), body.get("data")
    if set(body) != {"dtype", "shape", "data"} or dtype not in DTYPES or type(data) is not str \
            or type(shape) is not list or len(shape) > 8 \
            or not all(type(n) is int and 0 <= n <= MAX_TENSOR_BYTES for n in shape):
        raise ProtocolError("a malformed tensor")
    torch_dtype = getattr(torch, dtype)
    numel = math.prod(shape)
    itemsize = torch.empty((), dtype=torch_dtype).element_size()
    if len(data) > 4 * (MAX_TENSOR_BYTES // 3) + 4 or numel * itemsize > MAX_TENSOR_BYTES:
        raise ProtocolError("a tensor is too large")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise ProtocolError("a tensor's data is not base64") from None
    if len(raw) != numel * itemsize:
        raise ProtocolError(f"a tensor's data has {len(raw)} bytes, its shape and dtype need {numel * itemsize}")
    if numel == 0:
        return torch.empty(shape, dtype=torch_dtype)
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(torch_dtype).reshape(shape).clone()


# --- messages ----------------------------------------------------------------------------

_EVENTS = {  # event -> {field: (type, maximum length or None)}
    "imported": {},
    "ready": {"notes": (list, MAX_NOTES)},
    "start": {"check": (str, 200)},
    "answer": {"check": (str, 200), "value": (object, None), "seconds": (float, None)},
    "raised": {"check": (str, 200), "kind": (str, 40), "reason": (str, MAX_REASON),
               "traceback": (str, MAX_TRACEBACK), "seconds": (float, None)},
    "done": {},
}


def parse_event(line):
    """One line from the worker as a dict with ``event`` and the fields its schema allows;
    raises ProtocolError for anything else (the answer's ``value`` is decoded later)."""
    if len(line) > MAX_LINE:
        raise ProtocolError("a message is too long")
    if line.count(b"{") + line.count(b"[") > MAX_CONTAINERS:  # many tiny objects: parsed, they would need GBs
        raise ProtocolError("a message holds too many lists and dicts")
    try:
        event = json.loads(line, parse_constant=_no_constants)
    except (ValueError, RecursionError) as error:
        raise ProtocolError(f"a message is not valid JSON ({type(error).__name__})") from None
    if type(event) is not dict or event.get("event") not in _EVENTS:
        raise ProtocolError("a message with no known event")
    schema = _EVENTS[event["event"]]
    if set(event) != {"event", *schema}:
        raise ProtocolError(f"a {event['event']!r} message with unexpected fields")
    for name, (kind, limit) in schema.items():
        value = event[name]
        if kind is float and type(value) in (int, float):
            event[name] = value = float(value)
            if not math.isfinite(value) or value < 0:
                raise ProtocolError(f"a {event['event']!r} message with a bad {name}")
        elif kind is not object and type(value) is not kind:
            raise ProtocolError(f"a {event['event']!r} message whose {name} is not a {kind.__name__}")
        if limit is not None and len(value) > limit:
            raise ProtocolError(f"a {event['event']!r} message whose {name} is too long")
    if event["event"] == "ready" and not all(type(n) is str and len(n) <= MAX_REASON for n in event["notes"]):
        raise ProtocolError("a 'ready' message with malformed notes")
    if event["event"] == "raised" and event["kind"] not in RAISED_KINDS:
        raise ProtocolError("a 'raised' message of an unknown kind")
    return event


def _no_constants(name):
    raise ValueError(f"{name} is not allowed")


def _text(value):
    if type(value) is not str or len(value) > MAX_TEXT:
        raise ProtocolError("a malformed dict key")
    return value


def message(event, **fields):
    """One message as the worker writes it: a JSON line (bytes)."""
    return (json.dumps({"event": event, **fields}, allow_nan=False) + "\n").encode("utf-8")


# --- text for people ---------------------------------------------------------------------

def printable(text, limit=None):
    """``text`` with control characters (terminal escapes, carriage returns, newlines...)
    written as visible escapes such as ``\\x1b``, cut to ``limit`` characters."""
    text = str(text)
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    if limit is not None and len(out) > limit:
        out = out[:max(0, limit - 3)] + "..."
    return out


def finite(value):
    """``value`` with every NaN or infinity (in nested lists and dicts too) replaced by None,
    so that the JSON report is valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
