"""Generated protobuf / gRPC code of proto/proto/mlwatch/v1 (scripts/python-protos.sh); do not edit."""
