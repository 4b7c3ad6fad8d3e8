"""An h2c upstream that allows one stream per connection and goes away, on cue, while a
request waits for that stream (crates/cli/tests/upstream_goaway_wait.rs).

On its first connection it announces SETTINGS_MAX_CONCURRENT_STREAMS = 1 and never ends the
first request's stream by itself: the request's body is left unfinished by its client. Once
that request's HEADERS arrived and the proxy acknowledged the SETTINGS (so it knows the
limit), it prints `ready`. On a line `go` on stdin it sends GOAWAY with that request's
stream as the last one processed, then answers it (`answer-<name>`, before its body ended).
A request that arrives on it afterwards is not answered. Later connections answer each
request once its body ended, with `<name>` as the body.

A request is named by its path (`/b` is `b`). Prints `listening PORT`, then `ready`,
`answered NAME on 1`, `processed NAME BODY on CONNECTION` (the delivery count: one line per
request processed) and `ignored NAME on 1` (a request refused by the GOAWAY).
"""
import os
import select
import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

PRINTING = threading.Lock()


def say(*words):
    with PRINTING:
        print(*words, flush=True)


def name_of(event):
    return dict(event.headers)[b":path"].decode().lstrip("/")


def goaway(last):
    """A GOAWAY written by hand: h2 sends no more frames once it has closed the connection,
    and the request below the last stream id is still to be answered."""
    frame = hyperframe.frame.GoAwayFrame(0)
    frame.last_stream_id = last
    frame.error_code = 0
    return frame.serialize()


def first_connection(sock, go):
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.local_settings = h2.settings.Settings(
        client=False,
        initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1},
    )
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    held, acked, gone = None, False, False
    while True:
        readable, _, _ = select.select([sock] + ([] if gone else [go]), [], [])
        if go in readable:
            os.read(go, 1)
            sock.sendall(goaway(held[0]))
            gone = True
            body = ("answer-" + held[1]).encode()
            conn.send_headers(held[0], [(":status", "200"), ("content-length", str(len(body)))])
            conn.send_data(held[0], body, end_stream=True)
            sock.sendall(conn.data_to_send())
            say("answered", held[1], "on", 1)
            continue
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            sock.close()
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                if held is None:
                    held = (event.stream_id, name_of(event))
                else:
                    say("ignored", name_of(event), "on", 1)
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.SettingsAcknowledged):
                acked = True
            elif isinstance(event, h2.events.StreamEnded) and held and event.stream_id == held[0]:
                say("unexpected end of the held request's body")
        sock.sendall(conn.data_to_send())
        if held is not None and acked and not gone:
            say("ready")
            # Said once: the next `go` ends the wait.
            acked = None


def later_connection(sock, number):
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    names, bodies = {}, {}
    while True:
        data = sock.recv(65536)
        if not data:
            sock.close()
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                names[event.stream_id] = name_of(event)
                bodies[event.stream_id] = b""
            elif isinstance(event, h2.events.DataReceived):
                bodies[event.stream_id] += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                name = names[event.stream_id]
                body = name.encode()
                conn.send_headers(
                    event.stream_id, [(":status", "200"), ("content-length", str(len(body)))]
                )
                conn.send_data(event.stream_id, body, end_stream=True)
                say("processed", name, bodies[event.stream_id].decode() or "-", "on", number)
        sock.sendall(conn.data_to_send())


def serve(sock, number, go):
    try:
        if number == 1:
            first_connection(sock, go)
        else:
            later_connection(sock, number)
    except OSError:
        sock.close()
    except h2.exceptions.ProtocolError as e:
        say("protocol error on", number, repr(e))
        sock.close()


def main():
    go_read, go_write = os.pipe()

    def cues():
        for line in sys.stdin:
            if line.strip() == "go":
                os.write(go_write, b"g")

    threading.Thread(target=cues, daemon=True).start()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    say("listening", listener.getsockname()[1])
    number = 0
    while True:
        sock, _ = listener.accept()
        number += 1
        threading.Thread(target=serve, args=(sock, number, go_read), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
