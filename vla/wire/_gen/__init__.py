"""Generated from proto/vla/policy/v1/policy.proto by scripts/gen_proto.sh. Do not edit."""
