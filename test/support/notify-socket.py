#!/usr/bin/env python3
"""
NAME
  test/support/notify-socket.py - the service manager's end of sd_notify(3), for tests

SYNOPSIS
  python3 test/support/notify-socket.py SOCKET_PATH [HOST:PORT]

DESCRIPTION
  Binds an AF_UNIX datagram socket at SOCKET_PATH, the socket systemd names in NOTIFY_SOCKET
  (Node has none of its own), prints {"listening": SOCKET_PATH} once bound, then one JSON line
  per datagram: its KEY=VALUE lines as "fields" and the number of descriptors that came with it
  (SCM_RIGHTS) as "fds". Every descriptor is closed once the line is out, as the manager
  closes them: systemd-notify sends BARRIER=1 with the write end of a pipe and waits until
  that is closed.
  With HOST:PORT, on a datagram carrying READY=1, before anything else is read, it tries a TCP
  connection to HOST:PORT: "probe" says whether it was accepted, so that a test sees whether
  the service listened when it said it was ready. Runs until killed.
"""

import array
import json
import os
import socket
import sys


def main() -> None:
    path = sys.argv[1]
    probe = sys.argv[2] if len(sys.argv) > 2 else None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    print(json.dumps({"listening": path}), flush=True)
    int_size = array.array("i").itemsize
    while True:
        data, ancillary, _flags, _address = sock.recvmsg(65536, socket.CMSG_SPACE(16 * int_size))
        fds = array.array("i")
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % int_size])
        fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
        line = {"fields": fields, "fds": len(fds)}
        if probe is not None and fields.get("READY") == "1":
            host, port = probe.rsplit(":", 1)
            try:
                socket.create_connection((host, int(port)), timeout=2).close()
                line["probe"] = "accepted"
            except OSError as err:
                line["probe"] = str(err)
        # Said before the barrier ends: a test that waits for systemd-notify has the line by then.
        print(json.dumps(line), flush=True)
        for fd in fds:
            os.close(fd)


main()
