"""An h2c upstream that refuses a request after reading its whole body, deterministically.

On its first connection it waits for two requests, each with its body read to the end; then
it answers the first (echoing its body), sends GOAWAY with the first request's stream as the
last one processed, and closes: the second request was read whole but never processed, so a
proxy must send it again, body included. Later connections echo every request's body.
Prints `listening PORT`, then `answered BODY` or `refused BODY` per request.
"""
import socket
import sys

import h2.config
import h2.connection
import h2.events


def serve(sock, first):
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    bodies, ended = {}, []
    while True:
        data = sock.recv(65536)
        if not data:
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                bodies[event.stream_id] = b""
            elif isinstance(event, h2.events.DataReceived):
                bodies[event.stream_id] += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                ended.append(event.stream_id)
                if not first:
                    answer(conn, event.stream_id, bodies[event.stream_id])
        sock.sendall(conn.data_to_send())
        if first and len(ended) == 2:
            # The lower stream is the one processed: a GOAWAY's last stream id covers every
            # stream below it.
            kept, refused = sorted(ended)
            answer(conn, kept, bodies[kept])
            conn.close_connection(last_stream_id=kept)
            print("refused", bodies[refused].decode(), flush=True)
            sock.sendall(conn.data_to_send())
            linger_close(sock)
            return


def linger_close(sock):
    """Closes after the peer does: closing with unread input would reset the connection and
    could drop what was just sent."""
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(10)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass
    sock.close()


def answer(conn, stream_id, body):
    conn.send_headers(stream_id, [(":status", "200"), ("content-length", str(len(body)))])
    conn.send_data(stream_id, body, end_stream=True)
    print("answered", body.decode(), flush=True)


def main():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    print("listening", listener.getsockname()[1], flush=True)
    first = True
    while True:
        sock, _ = listener.accept()
        serve(sock, first)
        first = False


if __name__ == "__main__":
    sys.exit(main())
