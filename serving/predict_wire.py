"""TF Serving's PredictRequest and PredictResponse read from their wire bytes: what the gRPC gateway logs and pairs.

The generated classes (tensorflow-serving-api) import all of TensorFlow, and a gateway process with TensorFlow loaded
forwarded gRPC calls measurably slower (p99 about 2 ms more at load 3, bench/results/README.md). Forwarding needs no
message classes at all, and logging needs only the model spec and the tensors' values, so they are decoded here with
the standard library. A message this module cannot read raises ValueError. Standard library only.
"""

from __future__ import annotations

import struct
from typing import Any

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
# TensorProto dtype -> (struct code of one value in tensor_content, number of its repeated *_val field)
DTYPES = {1: ("f", 5), 2: ("d", 6), 3: ("i", 7), 7: ("", 8), 9: ("q", 10), 10: ("?", 11)}  # float double int32
# string int64 bool: the dtypes this project's signatures take and answer
_PACKED = {5: "f", 6: "d"}  # fixed-width packed fields; the others pack varints


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field: an int for varints, bytes otherwise."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, kind = key >> 3, key & 7
        if kind == VARINT:
            value, pos = _varint(buf, pos)
        elif kind in (FIXED64, FIXED32):
            width = 8 if kind == FIXED64 else 4
            value, pos = buf[pos : pos + width], pos + width
        elif kind == LENGTH:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"wire type {kind} of field {number} is not read here")
        if pos > len(buf):
            raise ValueError("truncated message")
        out.append((number, kind, value))
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _values(number: int, kind: int, value: Any, dtype: int) -> list[Any]:
    """The values one occurrence of a repeated *_val field holds (packed or not)."""
    code = _PACKED.get(number)
    if code and kind == LENGTH:
        return list(struct.unpack(f"<{len(value) // struct.calcsize(code)}{code}", value))
    if code:
        return [struct.unpack(f"<{code}", value)[0]]
    if number == 8:
        return [value.decode("utf-8", "replace")]
    raw = [value] if kind == VARINT else [v for _, _, v in fields(_as_varints(value))]
    return [bool(v) if dtype == 10 else _signed(v) for v in raw]


def _as_varints(packed: bytes) -> bytes:
    """Packed varints as a message of field-1 varints, so that fields() reads them."""
    out, pos = bytearray(), 0
    while pos < len(packed):
        start = pos
        _, pos = _varint(packed, pos)
        out += b"\x08" + packed[start:pos]
    return bytes(out)


def _shaped(values: list[Any], dims: list[int]) -> Any:
    if not dims:
        return values[0]
    if len(dims) == 1:
        return values
    step = len(values) // dims[0] if dims[0] else 0
    return [_shaped(values[i * step : (i + 1) * step], dims[1:]) for i in range(dims[0])]


def tensor(buf: bytes) -> Any:
    """A TensorProto's values as nested lists (a scalar for rank 0), strings decoded, as make_ndarray().tolist()."""
    dtype, dims, content, values = 0, [], b"", []
    parsed = fields(buf)
    for number, _, value in parsed:
        if number == 1:
            dtype = value
        elif number == 2:
            dims = [next((v for n, _, v in fields(dim) if n == 1), 0) for n, _, dim in fields(value) if n == 2]
        elif number == 4:
            content = value
    if dtype not in DTYPES:
        raise ValueError(f"tensor dtype {dtype} is not read here")
    code, val_field = DTYPES[dtype]
    if content and code:
        values = list(struct.unpack(f"<{len(content) // struct.calcsize(code)}{code}", content))
    else:
        for number, kind, value in parsed:
            if number == val_field:
                values += _values(number, kind, value, dtype)
    size = 1
    for d in dims:
        size *= d
    if values and len(values) < size:  # TF's shorthand: the last value fills the rest
        values += [values[-1]] * (size - len(values))
    if len(values) != size:
        raise ValueError(f"tensor of shape {dims} holds {len(values)} values")
    return _shaped(values, dims) if size else []


def _tensors(buf: bytes, number: int) -> dict[str, Any]:
    """A map<string, TensorProto> field's tensors by name."""
    out = {}
    for n, _, entry in fields(buf):
        if n == number:
            parts = {k: v for k, _, v in fields(entry)}
            out[parts.get(1, b"").decode()] = tensor(parts.get(2, b""))
    return out


def rows(columns: dict[str, Any]) -> list[dict[str, Any]]:
    """Columns of equal length as one dict per row."""
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def model_spec(buf: bytes, number: int) -> tuple[str, int | None]:
    """(model name, version or None) of the model_spec in field `number` (PredictRequest 1, PredictResponse 2)."""
    spec = next((v for n, _, v in fields(buf) if n == number), b"")
    name, version = "", None
    for number, _, value in fields(spec):
        if number == 1:
            name = value.decode()
        elif number == 2:
            version = next((_signed(v) for n, _, v in fields(value) if n == 1), 0)
    return name, version


def inputs(request: bytes) -> list[dict[str, Any]]:
    """A PredictRequest's inputs (field 2) as one dict of features per row."""
    return rows(_tensors(request, 2))


def outputs(response: bytes) -> list[dict[str, Any]]:
    """A PredictResponse's outputs (field 1) as one dict per row (serving/grpc_client.py's rows_of, without
    TensorFlow)."""
    return rows(_tensors(response, 1))
