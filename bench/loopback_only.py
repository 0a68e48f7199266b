"""bench/loopback_only - keep a Python peer's sockets on loopback.

install() replaces socket.socket with a class whose connect() and sendto() refuse any
destination outside 127.0.0.0/8 and ::1, so that no lookup of a benchmarked peer (pyspf,
policyd-spf) can leave the machine, whatever resolver library it picks. String tests, not
ipaddress: this runs for every query the peers make in the timed rounds.
"""
import socket
import sys


def _loopback(host):
    return host.startswith('127.') or host == '::1'


def install():
    base = socket.socket

    class LoopbackOnly(base):
        def _check(self, address):
            if isinstance(address, tuple) and not _loopback(address[0]):
                sys.stderr.write('bench: refused non-loopback destination %s\n' % address[0])
                sys.stderr.flush()
                raise OSError('bench: destination %s is not loopback' % address[0])

        def connect(self, address):
            self._check(address)
            return super().connect(address)

        def sendto(self, data, *rest):
            self._check(rest[-1])
            return super().sendto(data, *rest)

    socket.socket = LoopbackOnly
