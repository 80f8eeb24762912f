"""Protobuf messages <-> REST JSON, and the JSON Schema of each, from one descriptor.

The REST shapes mirror the gRPC contracts: snake_case field names, enums as lower-case
names without their prefix (``CONNECTION_STATUS_HEALTHY`` -> ``"healthy"``), timestamps
as RFC 3339 strings, durations as seconds, unset messages as ``null``. Because the
schema and the conversion are both derived from the descriptor, the OpenAPI document
cannot drift from what the handlers answer.
"""

from __future__ import annotations

import base64
import functools
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from google.protobuf import descriptor as _d
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

M = TypeVar("M", bound=Message)
# The upb and pure-Python descriptor classes differ in their stubs; both work here.
FieldDesc = Any
EnumDesc = Any
MessageDesc = Any

_FD = _d.FieldDescriptor
_INTEGER_TYPES: Final = {
    _FD.TYPE_INT32,
    _FD.TYPE_INT64,
    _FD.TYPE_UINT32,
    _FD.TYPE_UINT64,
    _FD.TYPE_SINT32,
    _FD.TYPE_SINT64,
    _FD.TYPE_FIXED32,
    _FD.TYPE_FIXED64,
    _FD.TYPE_SFIXED32,
    _FD.TYPE_SFIXED64,
}
_FLOAT_TYPES: Final = {_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT}
_TIMESTAMP: Final = Timestamp.DESCRIPTOR.full_name
_DURATION: Final = Duration.DESCRIPTOR.full_name
_FIELD_MASK: Final = FieldMask.DESCRIPTOR.full_name


def _enum_prefix(enum: EnumDesc) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", str(enum.name)).upper() + "_"


def enum_names(enum: EnumDesc) -> list[str]:
    """The REST spellings of an enum's values, in declaration order."""
    return [enum_to_json(enum, v.number) for v in enum.values]


def enum_to_json(enum: EnumDesc, number: int) -> str:
    value = enum.values_by_number.get(number)
    if value is None:
        return "unspecified"
    name = value.name
    prefix = _enum_prefix(enum)
    return str(name[len(prefix) :] if name.startswith(prefix) else name).lower()


def enum_from_json(enum: EnumDesc, text: str) -> int:
    """Raises ``ValueError`` for a name the enum does not have."""
    wanted = _enum_prefix(enum) + text.upper()
    value = enum.values_by_name.get(wanted) or enum.values_by_name.get(text.upper())
    if value is None:
        raise ValueError(f"unknown value {text!r}")
    return int(value.number)


def schema_name(descriptor: MessageDesc, *, write: bool = False) -> str:
    """Component name: ``postd.connectors.v1.Connection`` -> ``connectors.Connection``."""
    name = str(descriptor.full_name)
    if name.startswith("postd."):
        name = name[len("postd.") :]
    name = name.replace(".v1.", ".")
    return name + ("Input" if write else "")


# --------------------------------------------------------------------------- to JSON


def to_json(message: Message) -> dict[str, Any]:
    """Every field of ``message``, with the REST spellings described above."""
    return _converter(message.DESCRIPTOR)(message)


# Per message type, a converter compiled once from its descriptor into one Python
# function that builds the whole dict in a single expression: the answer of a list call
# converts hundreds of fields, and per-field dispatch on descriptors would be most of
# the gateway's own CPU per request. Field names come from our descriptors only.
Converter = Callable[[Any], Any]
_CONVERTERS: dict[str, Callable[[Any], dict[str, Any]]] = {}


def _converter(descriptor: MessageDesc) -> Callable[[Any], dict[str, Any]]:
    found = _CONVERTERS.get(descriptor.full_name)
    if found is not None:
        return found
    helpers: dict[str, Any] = {}
    items: list[str] = []
    for index, field in enumerate(descriptor.fields):
        name = field.name
        if not name.isidentifier():  # pragma: no cover - protoc guarantees it
            raise ValueError(f"unexpected field name {name!r}")
        step = _field_step(field)
        read = f"m.{name}"
        if step is not None:
            helpers[f"f{index}"] = step
            read = f"f{index}(m.{name})"
        singular = field.type == _FD.TYPE_MESSAGE and not field.is_repeated
        if singular and field.message_type.full_name != _FIELD_MASK:
            read = f"({read} if m.HasField({name!r}) else None)"
        items.append(f"{name!r}: {read}")
    source = "def convert(m):\n    return {" + ", ".join(items) + "}\n"
    namespace: dict[str, Any] = dict(helpers)
    exec(compile(source, f"<protojson {descriptor.full_name}>", "exec"), namespace)  # noqa: S102
    convert: Callable[[Any], dict[str, Any]] = namespace["convert"]
    _CONVERTERS[descriptor.full_name] = convert
    return convert


@functools.lru_cache(maxsize=65536)
def _timestamp(seconds: int, nanos: int) -> str:
    # The same objects' times recur across list calls; formatting them is not free.
    return Timestamp(seconds=seconds, nanos=nanos).ToJsonString()


def _value_fn(field: FieldDesc) -> Converter | None:
    """How one value of ``field`` converts; None: as it is."""
    if field.type == _FD.TYPE_MESSAGE:
        full = field.message_type.full_name
        if full == _TIMESTAMP:
            return lambda v: _timestamp(v.seconds, v.nanos)
        if full == _DURATION:
            return lambda v: round(v.seconds + v.nanos / 1e9, 9)
        if full == _FIELD_MASK:
            return lambda v: list(v.paths)
        return _lazy_converter(field.message_type)
    if field.type == _FD.TYPE_ENUM:
        names = {v.number: enum_to_json(field.enum_type, v.number) for v in field.enum_type.values}
        return lambda v: names.get(v, "unspecified")
    if field.type == _FD.TYPE_BYTES:
        return lambda v: base64.b64encode(v).decode()
    if field.type in _FLOAT_TYPES:
        return lambda v: v if math.isfinite(v) else None
    return None


def _lazy_converter(descriptor: MessageDesc) -> Converter:
    holder: list[Callable[[Any], dict[str, Any]]] = []

    def convert(value: Any) -> dict[str, Any]:
        if not holder:
            holder.append(_converter(descriptor))
        return holder[0](value)

    return convert


def _field_step(field: FieldDesc) -> Converter | None:
    """How a field's value converts; None: as it is."""
    if _is_map(field):
        value_fn = _value_fn(field.message_type.fields_by_name["value"])
        if value_fn is None:
            return lambda v: {str(k): x for k, x in v.items()}
        map_value = value_fn
        return lambda v: {str(k): map_value(x) for k, x in v.items()}
    value_fn = _value_fn(field)
    if field.is_repeated:
        if value_fn is None:
            return list
        each = value_fn
        return lambda v: [each(x) for x in v]
    return value_fn


def _is_map(field: FieldDesc) -> bool:
    return bool(
        field.type == _FD.TYPE_MESSAGE
        and field.message_type.GetOptions().map_entry
        and field.is_repeated
    )


# --------------------------------------------------------------------------- from JSON


def from_json(data: Mapping[str, Any], cls: type[M]) -> M:
    """Build a message from JSON already validated against its input schema. Raises
    ``ValueError`` for values the schema cannot express (an impossible timestamp)."""
    message = cls()
    _fill(message, data)
    return message


def _fill(message: Message, data: Mapping[str, Any]) -> None:
    fields: dict[str, Any] = dict(message.DESCRIPTOR.fields_by_name)
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            raise ValueError(f"unknown field {key!r}")
        if value is None:
            continue
        target = getattr(message, key)
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            for k, v in value.items():
                if value_field.type == _FD.TYPE_MESSAGE:
                    _fill(target[k], v)
                else:
                    target[k] = _scalar_from_json(value_field, v)
        elif field.is_repeated:
            for item in value:
                if field.type == _FD.TYPE_MESSAGE:
                    _set_message(target.add(), field, item)
                else:
                    target.append(_scalar_from_json(field, item))
        elif field.type == _FD.TYPE_MESSAGE:
            _set_message(target, field, value)
        else:
            setattr(message, key, _scalar_from_json(field, value))


def _set_message(target: Message, field: FieldDesc, value: Any) -> None:
    full = field.message_type.full_name
    if full == _TIMESTAMP:
        assert isinstance(target, Timestamp)
        target.FromJsonString(value)
    elif full == _DURATION:
        assert isinstance(target, Duration)
        seconds = float(value)
        target.seconds = int(seconds)
        target.nanos = round((seconds - int(seconds)) * 1e9)
    elif full == _FIELD_MASK:
        assert isinstance(target, FieldMask)
        target.paths.extend(value)
    else:
        target.SetInParent()
        _fill(target, value)


def _scalar_from_json(field: FieldDesc, value: Any) -> Any:
    if field.type == _FD.TYPE_ENUM:
        return enum_from_json(field.enum_type, value)
    if field.type == _FD.TYPE_BYTES:
        return base64.b64decode(value)
    return value


# --------------------------------------------------------------------------- JSON Schema


class SchemaRegistry:
    """Collects component schemas for the OpenAPI document as routes ask for them."""

    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}

    def ref(self, descriptor: MessageDesc, *, write: bool = False) -> dict[str, Any]:
        name = schema_name(descriptor, write=write)
        if name not in self.components:
            self.components[name] = {}  # placeholder: breaks cycles
            self.components[name] = self._message(descriptor, write)
        return {"$ref": f"#/components/schemas/{name}"}

    def shown_once(self, ref: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
        """A variant of a component whose ``fields`` may also be null: the answer of a
        replayed creating request, which never stores a secret shown once."""
        name = ref["$ref"].rsplit("/", 1)[-1]
        original = self.components[name]
        properties = dict(original["properties"])
        for field in fields:
            properties[field] = {"anyOf": [properties[field], {"type": "null"}]}
        return self.add(f"{name}.Replayable", {**original, "properties": properties})

    def add(self, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        self.components[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}

    def _message(self, descriptor: MessageDesc, write: bool) -> dict[str, Any]:
        properties = {f.name: self._field(f, write) for f in descriptor.fields}
        schema: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        if not write:
            schema["required"] = list(properties)
        return schema

    def _field(self, field: FieldDesc, write: bool) -> dict[str, Any]:
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value_field, write)}
        if field.is_repeated:
            return {"type": "array", "items": self._single(field, write)}
        single = self._single(field, write)
        if field.type == _FD.TYPE_MESSAGE and field.message_type.full_name != _FIELD_MASK:
            return {"anyOf": [single, {"type": "null"}]}
        return single

    def _single(self, field: FieldDesc, write: bool) -> dict[str, Any]:
        if field.type == _FD.TYPE_MESSAGE:
            full = field.message_type.full_name
            if full == _TIMESTAMP:
                return {"type": "string", "format": "date-time"}
            if full == _DURATION:
                return {"type": "number", "minimum": 0} if write else {"type": "number"}
            if full == _FIELD_MASK:
                return {"type": "array", "items": {"type": "string"}}
            return self.ref(field.message_type, write=write)
        if field.type == _FD.TYPE_ENUM:
            return {"type": "string", "enum": enum_names(field.enum_type)}
        if field.type == _FD.TYPE_BOOL:
            return {"type": "boolean"}
        if field.type in _INTEGER_TYPES:
            schema: dict[str, Any] = {"type": "integer"}
            if write:
                bits = 32 if field.type in (_FD.TYPE_INT32, _FD.TYPE_SINT32) else 53
                schema.update(minimum=-(2 ** (bits - 1)), maximum=2 ** (bits - 1) - 1)
            return schema
        if field.type in _FLOAT_TYPES:
            return {"type": "number"} if write else {"type": ["number", "null"]}
        if field.type == _FD.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        return {"type": "string"}
