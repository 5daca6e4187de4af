"""The local control socket (``[server] control_socket``) that ``smartdns reload`` and
``smartdns stats`` talk to, made so that it cannot hurt.

- Nothing but a stale socket is ever replaced: a regular file (a typo naming
  ``important.txt``) or a socket a running smartdns answers on stops the start with one line,
  and nothing is deleted (`claim`).
- It is bound in ``privilegedStartService``, which the twistd entry runs before twistd drops
  privileges, and handed to the ``--uid``/``--gid`` user so the dropped server still owns it.
- On stop it is removed only if the path still holds the socket this process made (same
  inode): a second instance that took the path over keeps its socket.

`stats_report` combines the counters of every process of ``[server] workers`` (the first
process asks its workers over a pipe, `smartdns.workers`) into what ``smartdns stats`` prints.
"""
from __future__ import annotations

import errno
import os
import socket
import stat
from typing import Any, Iterable

from twisted.application import service
from twisted.internet import unix
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from smartdns.errors import ControlSocketError

log = Logger()

CONTROL_SOCKET_MODE = 0o600           # owner only: a reload is an administrative act
PROBE_TIMEOUT_SECONDS = 2.0           # how long a live server may take to accept the probe
NOT_SUMMED = frozenset({"generation"})  # gauges that mean nothing added up (the first process's is shown)
SERIAL_PREFIX = "serial."             # serial.ZONE, serial.ZONE/LINE: the SOA serial served (not summed either)

Counters = list[tuple[str, int]]


def exchange(path: str, command: bytes, timeout: float) -> str:
    """Send one command line to the control socket at ``path`` and read the whole reply (the
    server closes the connection after it); OSError when it cannot be reached."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command + b"\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace").strip()


def claim(path: str) -> None:
    """Make ``path`` free for a new control socket, or raise ControlSocketError and touch nothing.

    Only a socket nobody listens on (connect refused: left by a server that was killed) is
    removed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ControlSocketError(f"control socket {path}: {e.strerror or e}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlSocketError(f"control socket {path} exists and is not a socket; not touching it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(PROBE_TIMEOUT_SECONDS)
        probe.connect(path)
    except ConnectionRefusedError:
        pass                                    # stale: nobody listens
    except OSError as e:
        if e.errno == errno.ENOENT:             # removed meanwhile
            return
        reason = "no answer" if isinstance(e, TimeoutError) else (e.strerror or str(e)).lower()
        raise ControlSocketError(
            f"control socket {path} may be in use ({reason}); not touching it") from None
    else:
        raise ControlSocketError(f"control socket {path} is in use by a running smartdns")
    finally:
        probe.close()
    os.unlink(path)
    log.info("removed stale control socket {path}", path=path)


def remove_if_ours(path: str, inode: int | None) -> None:
    """Unlink ``path`` only if it is still the socket with ``inode`` (ours)."""
    try:
        st = os.lstat(path)
        if inode is None or st.st_ino != inode or not stat.S_ISSOCK(st.st_mode):
            return
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as e:
        # After twistd's --uid the directory may not be ours to write; the next start finds a
        # stale socket and replaces it.
        log.info("control socket {path} left in place: {error}", path=path, error=e.strerror or e)


class _ControlPort(unix.Port):
    """Twisted's Unix listening port, except that closing it removes the socket file only if it
    is still the one this port created (Twisted unlinks whatever is at the path)."""

    def __init__(self, path: str, factory: Any, reactor: Any) -> None:
        super().__init__(path, factory, mode=CONTROL_SOCKET_MODE, reactor=reactor)  # type: ignore[arg-type]  # str works
        self.control_path = path
        self.inode: int | None = None

    def startListening(self) -> None:  # noqa: N802 (Twisted API)
        super().startListening()  # type: ignore[no-untyped-call]
        self.inode = os.lstat(self.control_path).st_ino

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 (Twisted API)
        remove_if_ours(self.control_path, self.inode)
        # unix.Port.connectionLost would unlink the path unconditionally; skip to TCP's.
        super(unix.Port, self).connectionLost(reason)  # type: ignore[no-untyped-call]


class ControlService(service.Service):
    """Binds the control socket (safely, see `claim`) and closes it on stop.

    ``owner`` is the (uid, gid) twistd switches to after binding (``--uid``/``--gid``), or
    None to keep the creating user's."""

    def __init__(self, reactor: Any, path: str, factory: Any, owner: tuple[int, int] | None = None) -> None:
        self.reactor = reactor
        self.path = path
        self.factory = factory
        self.owner = owner
        self.port: _ControlPort | None = None

    def privilegedStartService(self) -> None:  # noqa: N802 (Twisted API)
        """Claim the path and listen; raises ControlSocketError (one line) when it cannot."""
        if self.port is not None:
            return
        claim(self.path)
        port = _ControlPort(self.path, self.factory, self.reactor)
        try:
            port.startListening()
        except CannotListenError as e:
            error = e.socketError
            raise ControlSocketError(f"control socket {self.path}: {getattr(error, 'strerror', None) or error}"
                                     ) from None
        self.port = port
        if self.owner is not None:
            try:
                os.chown(self.path, *self.owner)
            except OSError as e:
                port.stopListening()  # type: ignore[no-untyped-call]
                self.port = None
                raise ControlSocketError(
                    f"control socket {self.path}: cannot hand it to uid {self.owner[0]}: {e.strerror or e}") from None
        log.info("control socket {path}", path=self.path)
        super().privilegedStartService()  # type: ignore[no-untyped-call]

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        if self.port is None:
            self.privilegedStartService()
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> Any:  # noqa: N802 (Twisted API)
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None  # type: ignore[no-untyped-call]


def twistd_owner(twistd_options: Any) -> tuple[int, int] | None:
    """The (uid, gid) twistd will switch to, from its options (``--uid``, ``--gid``; the gid
    defaults to the user's, as twistd does), or None when it keeps the current user."""
    if twistd_options is None:
        return None
    try:
        uid, gid = twistd_options["uid"], twistd_options["gid"]
    except KeyError:
        return None
    if uid is None and gid is None:
        return None
    if uid is not None and gid is None:
        import pwd
        gid = pwd.getpwuid(uid).pw_gid
    return (-1 if uid is None else uid, -1 if gid is None else gid)


def serial_counter(zone: str, line: str | None) -> str:
    """The ``smartdns stats`` name of the serial served for a zone to a line (None: no line)."""
    return f"{SERIAL_PREFIX}{zone}" if line is None else f"{SERIAL_PREFIX}{zone}/{line}"


def stats_report(processes: Iterable[tuple[int, int, Counters | None]]) -> dict[str, Any]:
    """The JSON object ``smartdns stats --json`` prints, from (worker index, pid, counters or
    None when that worker did not answer) for each process, the first process first.

    ``counters`` holds every counter summed over the processes that answered, except the
    gauges in NOT_SUMMED (the first process's value); ``processes`` holds each one's own."""
    totals: dict[str, int] = {}
    per_process: list[dict[str, Any]] = []
    missing: list[int] = []
    for index, pid, counters in processes:
        if counters is None:
            missing.append(index)
            continue
        for name, value in counters:
            if name in NOT_SUMMED or name.startswith(SERIAL_PREFIX):
                totals.setdefault(name, value)
            else:
                totals[name] = totals.get(name, 0) + value
        per_process.append({"worker": index, "pid": pid, "counters": dict(counters)})
    return {"counters": totals, "processes": per_process, "missing_workers": missing}
