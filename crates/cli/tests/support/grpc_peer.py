"""A gRPC server and client (grpcio, raw bytes: no protobuf, no generated code) for the
end-to-end tests of gRPC through meshguard (crates/cli/tests/upstream_protocols.rs).

    grpc_peer.py server             serves test.Echo on 127.0.0.1:0, prints "PORT <n>"
    grpc_peer.py client ADDR CASE [TOKEN]
                                    runs one call through ADDR, prints one JSON line:
                                    {"code": "OK", "details": ..., "trailing": {...}, ...}

The server's methods:
    /test.Echo/Unary         echoes the request, with the `authorization` header it saw (if any)
                             as trailing metadata `x-saw-authorization: yes|no`
    /test.Echo/ServerStream  the request is a count N: N messages "msg-0" .. "msg-(N-1)"
    /test.Echo/ClientStream  counts the messages received: "got N"
    /test.Echo/Slow          answers after 2 s
    /test.Echo/Fail          PERMISSION_DENIED "not yours", trailing metadata x-detail: why
"""

import json
import sys
import time
from concurrent import futures

import grpc

RAW = dict(request_deserializer=None, response_serializer=None)


def unary(request, context):
    saw = any(k == "authorization" for k, _ in context.invocation_metadata())
    context.set_trailing_metadata((("x-saw-authorization", "yes" if saw else "no"),))
    return b"echo:" + request


def server_stream(request, context):
    for i in range(int(request)):
        yield f"msg-{i}".encode()


def client_stream(request_iterator, context):
    n = sum(1 for _ in request_iterator)
    return f"got {n}".encode()


def slow(request, context):
    time.sleep(2)
    return b"late"


def fail(request, context):
    context.set_trailing_metadata((("x-detail", "why"),))
    context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")


def serve():
    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, **RAW),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, **RAW),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, **RAW),
            "Slow": grpc.unary_unary_rpc_method_handler(slow, **RAW),
            "Fail": grpc.unary_unary_rpc_method_handler(fail, **RAW),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    # Until the test kills the process, or its stdin closes.
    sys.stdin.read()
    server.stop(0)


def call(addr, case, token):
    # No proxy from the environment: the call must reach meshguard.
    channel = grpc.insecure_channel(addr, options=[("grpc.enable_http_proxy", 0)])
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    out = {}
    try:
        if case == "unary":
            stub = channel.unary_unary("/test.Echo/Unary")
            resp, c = stub.with_call(b"hello", metadata=metadata, timeout=10)
            out["response"] = resp.decode()
        elif case == "server_stream":
            stub = channel.unary_stream("/test.Echo/ServerStream")
            c = stub(b"100", metadata=metadata, timeout=20)
            msgs = [m.decode() for m in c]
            out["count"] = len(msgs)
            out["first"], out["last"] = msgs[0], msgs[-1]
        elif case == "client_stream":
            stub = channel.stream_unary("/test.Echo/ClientStream")
            resp, c = stub.with_call(
                (f"m{i}".encode() for i in range(100)), metadata=metadata, timeout=20
            )
            out["response"] = resp.decode()
        elif case == "deadline":
            stub = channel.unary_unary("/test.Echo/Slow")
            start = time.monotonic()
            try:
                stub.with_call(b"x", metadata=metadata, timeout=0.5)
            finally:
                out["seconds"] = round(time.monotonic() - start, 2)
            c = None
        elif case == "fail":
            stub = channel.unary_unary("/test.Echo/Fail")
            stub.with_call(b"x", metadata=metadata, timeout=10)
            c = None
        else:
            raise SystemExit(f"unknown case {case}")
        out["code"] = "OK"
        if c is not None:
            out["trailing"] = dict(c.trailing_metadata() or ())
    except grpc.RpcError as e:
        out["code"] = e.code().name
        out["details"] = e.details()
        out["trailing"] = dict(e.trailing_metadata() or ())
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve()
    else:
        call(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
