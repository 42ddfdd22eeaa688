"""TF Serving's MonitoringConfig and BatchingParameters messages, which the tensorflow-serving-api package lacks.

Declared here field for field as in TF Serving's monitoring_config.proto and session_bundle_config.proto (names,
numbers and types), so `text_format.Parse` accepts and rejects what TF Serving's own parser would for these files.
(ModelServerConfig is in the package: tensorflow_serving.config.model_server_config_pb2.)
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as Field

_INT64 = ".google.protobuf.Int64Value"
_FIELDS = {
    "PrometheusConfig": [("enable", 1, Field.TYPE_BOOL, None), ("path", 2, Field.TYPE_STRING, None)],
    "MonitoringConfig": [("prometheus_config", 1, Field.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")],
    "BatchingParameters": [
        ("max_batch_size", 1, Field.TYPE_MESSAGE, _INT64),
        ("batch_timeout_micros", 2, Field.TYPE_MESSAGE, _INT64),
        ("max_enqueued_batches", 3, Field.TYPE_MESSAGE, _INT64),
        ("num_batch_threads", 4, Field.TYPE_MESSAGE, _INT64),
        ("thread_pool_name", 5, Field.TYPE_MESSAGE, ".google.protobuf.StringValue"),
        ("allowed_batch_sizes", 6, Field.TYPE_INT64, "repeated"),
        ("pad_variable_length_inputs", 7, Field.TYPE_BOOL, None),
    ],
}


def _classes() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="credit_risk/tf_serving_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    for name, fields in _FIELDS.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind, extra in fields:
            repeated = extra == "repeated"
            message.field.add(
                name=field_name,
                number=number,
                type=kind,
                label=Field.LABEL_REPEATED if repeated else Field.LABEL_OPTIONAL,
                **({"type_name": extra} if kind == Field.TYPE_MESSAGE else {}),
            )
    pool.Add(proto)
    factory = message_factory.MessageFactory(pool)
    return {name: factory.GetPrototype(pool.FindMessageTypeByName(f"tensorflow.serving.{name}")) for name in _FIELDS}


_CLASSES = _classes()
MonitoringConfig = _CLASSES["MonitoringConfig"]
BatchingParameters = _CLASSES["BatchingParameters"]
