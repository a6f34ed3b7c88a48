"""A strict codec between plain Python/numpy values and JSON-able data: how worlds save their state.

Decoding builds nothing but None, bool, int, float, str, bytes, list, tuple, dict (str keys), numpy arrays and
numpy scalars of the numeric and bool dtypes in `DTYPES`: it never imports, calls or constructs anything a
file names, so data from a file cannot run code. Encoding refuses every other type (objects, object arrays,
subclasses of the plain types) with a PlainDataError naming where it met it.

The encoded form is JSON-able (dict with str keys, list, str, int, finite float, bool, None). A JSON list is a
list; every JSON object is a tagged node with one key:
  {"dict": {key: value, ...}}                          a dict (str keys)
  {"tuple": [value, ...]}                              a tuple
  {"bytes": "<base64>"}                                bytes
  {"float": "nan" | "inf" | "-inf"}                    a non-finite float (finite ones are JSON numbers)
  {"array": {"dtype": "<f8", "shape": [2, 3], "data": "<base64 of the C-order bytes>"}}
  {"scalar": {"dtype": "<i8", "data": "<base64>"}}     a numpy scalar
Round trips are exact: arrays and numpy scalars keep their bytes (float bits, NaN payloads), Python floats are
written as the shortest text that reads back to the same double, ints of any size as JSON integers.
On decode, dtypes must be in `DTYPES`, shapes non-negative and their byte sizes equal to the data given (checked
before anything is allocated), bools 0 or 1, base64 strict, nesting at most `MAX_DEPTH` deep.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import zlib
from typing import Any

import numpy as np

# Little-endian (or single-byte) numeric and bool dtypes, as numpy's dtype.str writes them.
DTYPES = frozenset({"|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"})
MAX_DEPTH = 64
MAX_DIMS = 32
_TAGS = ("dict", "tuple", "bytes", "float", "array", "scalar")
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class PlainDataError(ValueError):
  """A value that is not plain data (encode) or data that is not a valid encoding (decode); one line."""


def encode(value: Any) -> Any:
  """JSON-able data for `value`; PlainDataError if anything in it is not plain (see the module docstring)."""
  return _encode(value, "state", 0)


def decode(data: Any) -> Any:
  """The value that `encode` made `data` from; PlainDataError if `data` is not such an encoding."""
  return _decode(data, "state", 0)


def checksum(data: Any) -> int:
  """CRC32 of the canonical JSON text of encoded `data` (keys sorted): the same before writing and after
  reading back. PlainDataError if `data` is not JSON-able."""
  try:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
  except (TypeError, ValueError, RecursionError) as e:
    raise PlainDataError(f"not JSON data: {e}") from None
  return zlib.crc32(text.encode())


def short(value: Any, limit: int = 60) -> str:
  """A value read from a file as text safe for a one-line message: printable strings as they are, anything
  else as its repr on one line, cut to `limit` characters."""
  text = value if isinstance(value, str) and value.isprintable() else " ".join(repr(value).split())
  return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------ encode


def _encode(x: Any, where: str, depth: int) -> Any:
  if depth > MAX_DEPTH:
    raise PlainDataError(f"{where}: nested more than {MAX_DEPTH} deep")
  t = type(x)
  if x is None or t in (bool, int, str):
    return x
  if t is float:
    return x if math.isfinite(x) else {"float": "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")}
  if t is bytes:
    return {"bytes": _b64(x)}
  if t is list:
    return [_encode(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(x)]
  if t is tuple:
    return {"tuple": [_encode(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(x)]}
  if t is dict:
    bad = [k for k in x if type(k) is not str]
    if bad:
      raise PlainDataError(f"{where}: dict keys must be str, got {type(bad[0]).__name__} {short(bad[0])}")
    return {"dict": {k: _encode(v, f"{where}[{k!r}]", depth + 1) for k, v in x.items()}}
  if t is np.ndarray:
    dtype = _dtype_str(x.dtype, where)
    data = _b64(np.ascontiguousarray(x).tobytes())
    return {"array": {"dtype": dtype, "shape": list(x.shape), "data": data}}
  if isinstance(x, np.generic) and t is x.dtype.type:
    return {"scalar": {"dtype": _dtype_str(x.dtype, where), "data": _b64(x.tobytes())}}
  raise PlainDataError(f"{where}: {t.__module__}.{t.__qualname__} is not plain data")


def _dtype_str(dtype: np.dtype, where: str) -> str:
  if dtype.str not in DTYPES:
    raise PlainDataError(f"{where}: arrays of dtype {dtype} are not plain data (numeric and bool dtypes only)")
  return dtype.str


def _b64(raw: bytes) -> str:
  return base64.b64encode(raw).decode("ascii")


# ------------------------------------------------------------------ decode


def _decode(x: Any, where: str, depth: int) -> Any:
  if depth > MAX_DEPTH:
    raise PlainDataError(f"{where}: nested more than {MAX_DEPTH} deep")
  t = type(x)
  if x is None or t in (bool, int, str):
    return x
  if t is float:
    if not math.isfinite(x):
      raise PlainDataError(f"{where}: a non-finite number must be tagged, got {x}")
    return x
  if t is list:
    return [_decode(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(x)]
  if t is not dict or len(x) != 1 or next(iter(x)) not in _TAGS:
    keys = list(x)[:4] if t is dict else None
    what = f"an object with keys {short(keys)}" if t is dict else t.__name__
    raise PlainDataError(f"{where}: expected plain data (one of the tags {', '.join(_TAGS)}), got {what}")
  ((tag, v),) = x.items()
  if tag == "dict":
    if type(v) is not dict:
      raise PlainDataError(f"{where}: 'dict' holds {type(v).__name__}, not an object")
    return {k: _decode(y, f"{where}[{k!r}]", depth + 1) for k, y in v.items()}
  if tag == "tuple":
    if type(v) is not list:
      raise PlainDataError(f"{where}: 'tuple' holds {type(v).__name__}, not a list")
    return tuple(_decode(y, f"{where}[{i}]", depth + 1) for i, y in enumerate(v))
  if tag == "bytes":
    return _unb64(v, None, where)
  if tag == "float":
    if type(v) is not str or v not in _NON_FINITE:
      raise PlainDataError(f"{where}: 'float' must be 'nan', 'inf' or '-inf', got {short(v)}")
    return _NON_FINITE[v]
  return _decode_numeric(tag, v, where)


def _decode_numeric(tag: str, v: Any, where: str) -> Any:
  fields = {"dtype", "shape", "data"} if tag == "array" else {"dtype", "data"}
  if type(v) is not dict or set(v) != fields:
    got = sorted(v) if type(v) is dict else type(v).__name__
    raise PlainDataError(f"{where}: {tag!r} must hold exactly {sorted(fields)}, got {short(got)}")
  if type(v["dtype"]) is not str or v["dtype"] not in DTYPES:
    raise PlainDataError(f"{where}: dtype {short(v['dtype'])} is not one of {', '.join(sorted(DTYPES))}")
  dtype = np.dtype(v["dtype"])
  shape = v["shape"] if tag == "array" else []
  if type(shape) is not list or len(shape) > MAX_DIMS or any(type(n) is not int or n < 0 for n in shape):
    raise PlainDataError(f"{where}: shape must be a list of at most {MAX_DIMS} integers >= 0, got {short(shape)}")
  raw = _unb64(v["data"], math.prod(shape) * dtype.itemsize, where)
  if dtype.kind == "b" and raw.translate(None, b"\x00\x01"):
    raise PlainDataError(f"{where}: a bool array holds bytes other than 0 and 1")
  out = np.frombuffer(raw, dtype).reshape(shape).copy()  # a copy: writable, and its own memory
  return out if tag == "array" else out[()]


def _unb64(text: Any, nbytes: int | None, where: str) -> bytes:
  """The bytes of base64 `text`, checked to be `nbytes` long (when given) before decoding."""
  if type(text) is not str:
    raise PlainDataError(f"{where}: base64 data must be a string, got {type(text).__name__}")
  if nbytes is not None and len(text) != 4 * ((nbytes + 2) // 3):
    raise PlainDataError(f"{where}: {len(text)} base64 characters cannot hold the {nbytes} bytes declared")
  try:
    raw = base64.b64decode(text, validate=True)
  except (binascii.Error, ValueError) as e:
    raise PlainDataError(f"{where}: invalid base64 ({e})") from None
  if nbytes is not None and len(raw) != nbytes:
    raise PlainDataError(f"{where}: {len(raw)} bytes of data, {nbytes} declared")
  return raw
