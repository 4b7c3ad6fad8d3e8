"""A recording external authorizer (grpcio + xds-protos' Envoy stubs, and http.server) for the
tests of meshguard's proxy asking CUSTOM policies' providers (crates/cli/tests/ext_authz_client.rs),
and of Envoy asking the same server for the same requests.

    ext_authz_server.py     serves envoy.service.auth.v3.Authorization/Check (gRPC) and the
                            HTTP variant on 127.0.0.1, prints "grpc <port>" and "http <port>",
                            then one JSON line per question received:
                            {"kind": "grpc", "check": <CheckRequest as JSON>} or
                            {"kind": "http", "method": ..., "path": ..., "headers": [[k, v], ...]}

What it answers, by the request header `x-ext-authz` of the checked request (as Istio's sample
ext_authz server, which allows on `x-ext-authz: allow`):
    allow    OK; gRPC: ok_response sets `x-ext-authz-check-result: allowed`, appends
             `x-authz-added: yes`, removes `x-remove-me`; HTTP: 200 with
             `x-ext-authz-check-result: allowed`, `x-user: alice`,
             `x-envoy-auth-headers-to-remove: x-remove-me`
    sleep    waits 3 s, then allows
    allow-more  as allow, and gRPC: response_headers_to_add `x-resp-added: yes` (and
             `x-ext-authz-check-result: allowed`), query_parameters_to_set `added=1`, `x=2`,
             query_parameters_to_remove `y`, `gone`; HTTP: 200 as allow plus `x-resp-added: yes`
             and `set-cookie: s=1`
    error    gRPC: UNAVAILABLE "authorizer broken"; HTTP: 500
    error-response  gRPC: status 13 with error_response 503, `x-ext-authz-check-result: error`,
             body "authorizer failed"; HTTP: 503 with the same header and body
    error-response-bare  gRPC: status 13 with an empty error_response
    status-only  gRPC: status 7 and no http_response
    garbage  gRPC: a response message that is not a CheckResponse; HTTP: bytes that are not HTTP
    other    denied: 401 (gRPC: UNAUTHENTICATED with denied_response status 401), body
             "denied by ext_authz for not found header `x-ext-authz: allow` in the request",
             headers `x-ext-authz-check-result: denied` and `www-authenticate: Basic realm="test"`
"""

import json
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf.json_format import MessageToDict
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.rpc import status_pb2

DENY_BODY = "denied by ext_authz for not found header `x-ext-authz: allow` in the request"
LOCK = threading.Lock()


def record(entry):
    with LOCK:
        sys.stdout.write(json.dumps(entry, sort_keys=True) + "\n")
        sys.stdout.flush()


def header(key, value, append=None):
    h = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value))
    if append is not None:
        h.append_action = append
    return h


def check(request, context):
    """Check, answered as serialized bytes (so that it can also answer garbage)."""
    record({"kind": "grpc", "check": MessageToDict(request)})
    verdict = request.attributes.request.http.headers.get("x-ext-authz", "")
    if verdict == "sleep":
        time.sleep(3)
        verdict = "allow"
    if verdict == "error":
        context.abort(grpc.StatusCode.UNAVAILABLE, "authorizer broken")
    if verdict == "garbage":
        return b"\x0a\xff\xff\xff"
    return answer(verdict).SerializeToString()


def answer(verdict):
    if verdict in ("allow", "allow-more"):
        ok = external_auth_pb2.OkHttpResponse(
            headers=[
                header(
                    "x-ext-authz-check-result",
                    "allowed",
                    base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                ),
                header("x-authz-added", "yes"),
            ],
            headers_to_remove=["x-remove-me"],
        )
        if verdict == "allow-more":
            ok.response_headers_to_add.extend(
                [
                    header("x-resp-added", "yes"),
                    header("x-ext-authz-check-result", "allowed"),
                ]
            )
            ok.query_parameters_to_set.extend(
                [
                    base_pb2.QueryParameter(key="added", value="1"),
                    base_pb2.QueryParameter(key="x", value="2"),
                ]
            )
            ok.query_parameters_to_remove.extend(["y", "gone"])
        return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=0), ok_response=ok)
    if verdict == "error-response":
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=13),
            error_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=503),
                headers=[header("x-ext-authz-check-result", "error")],
                body="authorizer failed",
            ),
        )
    if verdict == "error-response-bare":
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=13),
            error_response=external_auth_pb2.DeniedHttpResponse(),
        )
    if verdict == "status-only":
        return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=7))
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=16),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=401),
            headers=[
                header("x-ext-authz-check-result", "denied"),
                header("www-authenticate", 'Basic realm="test"'),
            ],
            body=DENY_BODY,
        ),
    )


class Http(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle_one(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        record(
            {
                "kind": "http",
                "method": self.command,
                "path": self.path,
                "headers": [[k.lower(), v] for k, v in self.headers.items()],
                "body": body.decode("latin-1"),
            }
        )
        verdict = self.headers.get("x-ext-authz", "")
        if verdict == "sleep":
            time.sleep(3)
            verdict = "allow"
        if verdict == "error":
            self.answer(500, [], b"broken")
        elif verdict == "error-response":
            self.answer(503, [("x-ext-authz-check-result", "error")], b"authorizer failed")
        elif verdict == "garbage":
            self.wfile.write(b"garbage\r\n\r\n")
            self.close_connection = True
        elif verdict in ("allow", "allow-more"):
            more = [("x-resp-added", "yes"), ("set-cookie", "s=1")] if verdict == "allow-more" else []
            self.answer(
                200,
                [
                    ("x-ext-authz-check-result", "allowed"),
                    ("x-user", "alice"),
                    ("x-envoy-auth-headers-to-remove", "x-remove-me"),
                ]
                + more,
                b"",
            )
        else:
            self.answer(
                401,
                [
                    ("x-ext-authz-check-result", "denied"),
                    ("www-authenticate", 'Basic realm="test"'),
                    ("content-type", "text/plain"),
                ],
                DENY_BODY.encode(),
            )

    def answer(self, status, headers, body):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_one

    def log_message(self, *args):
        pass


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "envoy.service.auth.v3.Authorization",
                {
                    "Check": grpc.unary_unary_rpc_method_handler(
                        check,
                        request_deserializer=external_auth_pb2.CheckRequest.FromString,
                        response_serializer=lambda b: b,
                    )
                },
            ),
        )
    )
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), Http)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    print(f"grpc {grpc_port}", flush=True)
    print(f"http {http.server_address[1]}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
