"""The wire contract: msgpack-numpy codec, gRPC stubs, error taxonomy and PolicyClient.

Torch-free by design (a test proves it): the sim client and any robot-side code import
only this package.
"""
from vla.wire.client import PolicyClient, connect
from vla.wire.codec import packb, unpackb
from vla.wire.errors import ErrorCode, PolicyError

__all__ = ["ErrorCode", "PolicyClient", "PolicyError", "connect", "packb", "unpackb"]
