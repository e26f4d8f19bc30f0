#!/usr/bin/python3
"""A minimal, complete Switchboard department feed client (protocol version 2).

The same protocol as switchboard-feed, in about 150 lines of Python with
Debian's python3-zmq (apt-get install python3-zmq). See docs/departments.md
and docs/feed-protocol.md.

    feed_client.py --endpoint tcp://switchboard.council.local:5601 \
        --server-key server.pub --key housing.key --state ./state

Each record's JSON (the RECORD body) is printed on standard output, one line
per record, and acknowledged once printed and flushed; the acknowledged
position is kept in STATE/position (written atomically) so a restart resumes
where it stopped. An ERASE notice is printed as {"erase": {...}} and answered
ERASED: whoever reads standard output must delete its copy of that record.
Logs go to standard error and never contain record contents.
"""

import argparse
import json
import os
import signal
import sys

import zmq
import zmq.utils.monitor


def log(message):
    print("feed_client.py: " + message, file=sys.stderr, flush=True)


def read_key(text):
    """A Z85 key: 40 characters given directly, or a file holding them."""
    if len(text) == 40 and not os.path.exists(text):
        return text.encode("ascii")
    with open(text, encoding="ascii") as f:
        lines = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    if len(lines) != 1 or len(lines[0]) != 40:
        sys.exit("feed_client.py: %s does not hold one 40-character Z85 key" % text)
    return lines[0].encode("ascii")


def read_position(state):
    try:
        with open(os.path.join(state, "position"), encoding="ascii") as f:
            return int(f.read().strip())
    except FileNotFoundError:
        return 0


def write_position(state, acked):
    tmp = os.path.join(state, "position.tmp")
    with open(tmp, "w", encoding="ascii") as f:
        f.write("%d\n" % acked)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(state, "position"))
    fd = os.open(state, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main():
    p = argparse.ArgumentParser(description="Switchboard department feed client (example)")
    p.add_argument("--endpoint", required=True, help="tcp://HOST:PORT")
    p.add_argument("--server-key", required=True, help="the server's public key (file or Z85)")
    p.add_argument("--key", required=True, help="this client's secret key file (NAME.key)")
    p.add_argument("--state", required=True, help="directory for the acknowledged position")
    p.add_argument("--credit", type=int, default=100, help="records in flight (1 to 10000)")
    args = p.parse_args()

    os.makedirs(args.state, exist_ok=True)
    acked = read_position(args.state)
    secret = read_key(args.key)

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.curve_secretkey = secret
    sock.curve_publickey = zmq.curve_public(secret)
    sock.curve_serverkey = read_key(args.server_key)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 5000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 15000)
    sock.setsockopt(zmq.LINGER, 1000)

    def send(msg_type, body):
        sock.send_multipart([msg_type.encode("ascii"), json.dumps(body).encode("utf-8")])

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))

    # HELLO on every new connection: ZeroMQ reconnects by itself after a
    # network failure or a server restart, and the server needs a HELLO to
    # (re)start the session and resend what was not acknowledged.
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED |
                                      zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                      zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    sock.connect(args.endpoint)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    while not stopping:
        ready = dict(poller.poll(500))
        if monitor in ready:
            event = zmq.utils.monitor.recv_monitor_message(monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                send("HELLO", {"protocol": 2, "acked": acked, "credit": args.credit})
                log("connected to %s; HELLO from position %d" % (args.endpoint, acked))
            elif event == zmq.EVENT_DISCONNECTED:
                log("disconnected; ZeroMQ reconnects")
            else:
                log("handshake refused: check the server key, and that the council listed ours")
        if sock not in ready:
            continue
        frames = sock.recv_multipart()
        if len(frames) != 2:
            log("malformed message (%d frames); ignored" % len(frames))
            continue
        msg_type = frames[0].decode("ascii", "replace")
        try:
            body = json.loads(frames[1])
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            log("malformed %s body; ignored" % msg_type)
            continue
        if msg_type == "WELCOME":
            if body.get("protocol") != 2:
                sys.exit("feed_client.py: server speaks protocol %r, not 2" % body.get("protocol"))
            log("WELCOME from %s, next %s" % (body.get("destination"), body.get("next")))
        elif msg_type in ("RECORD", "RECORDS"):
            # RECORDS (version 2): several RECORD bodies in one message.
            records = body.get("records") if msg_type == "RECORDS" else [body]
            if not isinstance(records, list):
                log("RECORDS without a records array; ignored")
                continue
            for record in records:
                seq = record.get("seq") if isinstance(record, dict) else None
                if not isinstance(seq, int) or not isinstance(record.get("id"), str):
                    log("RECORD without seq or id; ignored")
                    continue
                if seq > acked:  # at or below the position: a resend, already processed
                    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
                    acked = seq
            sys.stdout.flush()
            write_position(args.state, acked)
            send("ACK", {"upto": acked})
        elif msg_type == "ERASE":
            notice, record_id = body.get("notice"), body.get("record_id")
            if not isinstance(notice, str) or not isinstance(record_id, str):
                log("ERASE without notice or record_id; ignored")
                continue
            sys.stdout.write(json.dumps({"erase": body}, separators=(",", ":")) + "\n")
            sys.stdout.flush()
            send("ERASED", {"notice": notice, "record_id": record_id,
                            "receipt": "feed_client.py: erase notice for record %s passed to the reader "
                                       "of standard output" % record_id})
            log("erase notice %s for record %s confirmed" % (notice, record_id))
        elif msg_type == "ERROR":
            log("server error: %s" % str(body.get("error"))[:300])
        else:
            log("unknown message type; ignored")

    send("BYE", {})
    sock.disable_monitor()
    monitor.close()
    sock.close()
    ctx.term()
    log("stopped at position %d" % acked)


if __name__ == "__main__":
    main()
