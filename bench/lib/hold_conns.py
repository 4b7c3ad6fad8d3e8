#!/usr/bin/env python3
"""Open N keep-alive connections to a proxy, make one request on each, then hold them idle.

usage: hold_conns.py HOST PORT N STATUS_FILE [TOKEN_FILE]

Each connection sends `GET /` (with `Authorization: Bearer <token>` when TOKEN_FILE is given)
and reads the whole response, so every connection has been through the proxy's full request
path; at most 200 requests are in flight at once. The connections then stay open, idle.
When all are set up, STATUS_FILE gets one line `open=O closed=C failed=F status=S` (S: the
response codes seen) and the process sleeps until SIGTERM/SIGINT. Standard library only.

With HOLD_TLS_CERT and HOLD_TLS_KEY in the environment, each connection is mutual TLS first
(a full handshake presenting that certificate, ALPN http/1.1; the server's certificate is not
checked: the proxy under test is the point), then the same request.
"""
import collections
import os
import signal
import socket
import ssl
import sys
import time

BATCH = 200


def read_response(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return status


def main():
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    host, port, n, status_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    auth = ""
    if len(sys.argv) == 6:
        with open(sys.argv[5]) as f:
            auth = "Authorization: Bearer " + f.read().strip() + "\r\n"
    request = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n".encode()
    tls = None
    if os.environ.get("HOLD_TLS_CERT"):
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        tls.load_cert_chain(os.environ["HOLD_TLS_CERT"], os.environ["HOLD_TLS_KEY"])
        tls.set_alpn_protocols(["http/1.1"])
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    held, failed, codes = [], 0, collections.Counter()
    for start in range(0, n, BATCH):
        batch = []
        for _ in range(min(BATCH, n - start)):
            try:
                s = socket.create_connection((host, port), timeout=10)
                if tls:
                    s = tls.wrap_socket(s)
                s.sendall(request)
                batch.append(s)
            except OSError:
                failed += 1
        for s in batch:
            try:
                codes[read_response(s)] += 1
                held.append(s)
            except (OSError, ValueError, IndexError):
                failed += 1
                s.close()
    time.sleep(1)
    closed = 0
    for s in held:
        s.setblocking(False)
        try:
            # (an SSLSocket takes no flags; TLS 1.3 session tickets read here are not data)
            if isinstance(s, ssl.SSLSocket):
                if s.recv(1) == b"":
                    closed += 1
            elif s.recv(1, socket.MSG_PEEK) == b"":
                closed += 1
        except (BlockingIOError, ssl.SSLWantReadError):
            pass
        except OSError:
            closed += 1
    status = ",".join(f"{k}x{v}" for k, v in sorted(codes.items()))
    tmp = status_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"open={len(held) - closed} closed={closed} failed={failed} status={status}\n")
    os.rename(tmp, status_file)
    while not stop:
        time.sleep(0.2)


if __name__ == "__main__":
    main()
