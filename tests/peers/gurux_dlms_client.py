#!/usr/bin/env python3
"""A DLMS/COSEM client built on Gurux's gurux-dlms 1.0.203 (an independent implementation) for ami's interop tests.

Only Gurux's *client* side is used (GXDLMSClient / GXDLMSSecureClient); the transport code is our own (TCP, or a
serial device / pty with --serial PATH for HDLC). It opens an association (SNRM/UA over HDLC, then AARQ/AARE, and
the HLS-GMAC pass for --auth high-gmac), reads what it is asked for, releases, disconnects and prints one JSON
object on stdout:

    gurux_dlms_client.py --host 127.0.0.1 --port 4059 --framing hdlc --client-address 16 --server-address 1/17 \
        --read 1-0:1.8.0:3 --read 1-0:32.7.0:3 --clock --profile 1-0:99.1.0 \
        --from 2026-01-01T00:00:00Z --to 2026-01-01T02:00:00Z

    {"registers": {"1-0:1.8.0": {"class": 3, "raw": 123, "scaler": -1, "unit": 30, "unit_symbol": "Wh",
                                 "value": 12.3}},
     "clock": {"iso": "2026-01-01T00:00:05+00:00", "unix": 1767225605, "deviation": true},
     "profile": {"obis": "1-0:99.1.0", "columns": ["0.0.1.0.0.255:2", "1.0.1.8.0.255:2"],
                 "rows": [[1767225600, 12], ...]}}

--read OBIS:CLASS: class 3/4 read attribute 3 (scaler_unit) and 2 (value), class 5 attribute 4 (scaler_unit) and 3
(current average value), class 1 attribute 2 only. "value" is raw × 10^scaler. Profile rows hold the meter's values as sent (no scaler applied), date-time columns as unix seconds.
--server-address: "L/P" (logical/physical, combined with GXDLMSClient.getServerAddress) or a plain number (Gurux's
combined address, or the destination wPort with --framing wrapper).
--auth none | low (LLS, --password) | high-gmac (HLS mechanism 5 with glo-ciphering, --block-key, --auth-key,
--system-title; authenticated and encrypted APDUs).
Errors: exit status 1 (2 for bad arguments) and one line on stderr naming the step that failed. --trace prints every
frame in hex on stderr. --max-pdu makes the meter answer long reads in GET data blocks.
"""
import argparse
import contextlib
import datetime
import json
import os
import socket
import sys
import time

os.environ["TZ"] = "UTC"  # a date-time without deviation is read as UTC, the same on every machine
time.tzset()

from gurux_dlms import GXByteBuffer, GXDateTime, GXDLMSClient, GXDLMSException, GXReplyData  # noqa: E402
from gurux_dlms.enums import Authentication, DataType, InterfaceType, ObjectType, Security  # noqa: E402
from gurux_dlms.internal._GXCommon import _GXCommon  # noqa: E402
from gurux_dlms.objects import GXDLMSClock, GXDLMSData, GXDLMSProfileGeneric, GXDLMSRegister  # noqa: E402
from gurux_dlms.secure import GXDLMSSecureClient  # noqa: E402

UNIT_SYMBOLS = {
    0: "",
    7: "s",
    8: "deg",
    9: "degC",
    27: "W",
    28: "VA",
    29: "var",
    30: "Wh",
    31: "VAh",
    32: "varh",
    33: "A",
    35: "V",
    44: "Hz",
    255: "",
}


class Fail(Exception):
    """A step failed; the message is what the user sees."""


@contextlib.contextmanager
def step(name):
    """`with step("AARQ"):` turns any exception into a Fail that names the step."""
    try:
        yield
    except Fail:
        raise
    except Exception as ex:  # noqa: BLE001 - every Gurux error becomes one clear line
        raise Fail(f"{name}: {type(ex).__name__}: {ex}") from ex


class Link:
    """A TCP socket or a serial line (pty) carrying HDLC frames or wrapper PDUs; Gurux's getData decides when a
    reply is complete."""

    def __init__(self, client, a):
        self.client = client
        self.trace = a.trace
        self.timeout = a.timeout
        if a.serial:
            import serial  # pyserial, in the same venv

            self.port = serial.Serial(a.serial, baudrate=a.baud, timeout=0.05)
            self.sock = None
        else:
            self.port = None
            self.sock = socket.create_connection((a.host, a.port), timeout=a.timeout)
            self.sock.settimeout(a.timeout)

    def close(self):
        try:
            (self.port or self.sock).close()
        except OSError:
            pass

    def send(self, data):
        if self.port:
            self.port.write(data)
            self.port.flush()
        else:
            self.sock.sendall(data)

    def recv(self):
        """Some bytes, or Fail after the timeout; b"" means the peer closed the connection."""
        if self.sock:
            try:
                return self.sock.recv(4096)
            except socket.timeout:
                raise Fail("no reply from the meter (timeout)")
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            chunk = self.port.read(max(1, self.port.in_waiting))
            if chunk:
                return chunk
        raise Fail("no reply from the meter (timeout)")

    def exchange(self, frame, reply):
        """Sends one frame (None: only receive, for streaming) and reads until Gurux has a whole reply."""
        if frame:
            if self.trace:
                print("TX " + GXByteBuffer.hex(frame), file=sys.stderr)
            self.send(bytes(frame))
        buf = GXByteBuffer()
        notify = GXReplyData()
        while not self.client.getData(buf, reply, notify):
            chunk = self.recv()
            if not chunk:
                raise Fail("the meter closed the connection")
            if self.trace:
                print("RX " + GXByteBuffer.hex(bytearray(chunk)), file=sys.stderr)
            buf.set(bytearray(chunk))
        if reply.error != 0:
            raise GXDLMSException(reply.error)

    def exchange_blocks(self, frames, reply):
        """Sends a request (one or several frames) and follows HDLC segments and GET blocks until complete."""
        if not frames:
            return
        if isinstance(frames, (bytes, bytearray)):
            frames = [frames]
        for frame in frames:
            self.exchange(frame, reply)
            while reply.isMoreData():
                nxt = None if reply.isStreaming() else self.client.receiverReady(reply)
                self.exchange(nxt, reply)


def parse_obis(text):
    """'1-0:1.8.0', '1-0:1.8.0*255' or '1.0.1.8.0.255' → '1.0.1.8.0.255' (Gurux's form)."""
    t = text.strip()
    if "." in t and ":" not in t and "-" not in t:
        parts = t.split(".")
    else:
        f = 255
        if "*" in t:
            t, fs = t.split("*", 1)
            f = int(fs)
        ab, cde = t.split(":", 1)
        a, b = ab.split("-", 1)
        c, d, e = cde.split(".")
        parts = [a, b, c, d, e, str(f)]
    if len(parts) == 5:
        parts.append("255")
    if len(parts) != 6 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise ValueError(f"not an OBIS code: {text}")
    return ".".join(str(int(p)) for p in parts)


def obis_display(ln):
    a, b, c, d, e, f = ln.split(".")
    s = f"{a}-{b}:{c}.{d}.{e}"
    return s if f == "255" else f"{s}*{f}"


def parse_time(text):
    dt = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt


def to_datetime(settings, v):
    """A COSEM date-time as Gurux gives it (GXDateTime or 12 raw bytes) → (aware datetime, whether the meter sent
    a deviation), or (None, False). Without a deviation the time is taken as UTC."""
    if isinstance(v, (bytes, bytearray)) and len(v) == 12:
        v = _GXCommon.changeType(settings, bytearray(v), DataType.DATETIME)
    if isinstance(v, GXDateTime):
        d = v.value
        if d.tzinfo is None:
            return d.replace(tzinfo=datetime.timezone.utc), False
        return d, True
    return None, False


def plain(v):
    """A Gurux value → something json can print."""
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, GXDateTime):
        return v.value.isoformat()
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    try:
        return int(v)
    except (TypeError, ValueError):
        return str(v)


def build_client(a):
    framing = InterfaceType.HDLC if a.framing == "hdlc" else InterfaceType.WRAPPER
    if "/" in a.server_address:
        logical, physical = (int(x, 0) for x in a.server_address.split("/", 1))
        server = GXDLMSClient.getServerAddress(logical, physical)
    else:
        server = int(a.server_address, 0)
    auth = {"none": Authentication.NONE, "low": Authentication.LOW, "high-gmac": Authentication.HIGH_GMAC}[a.auth]
    password = a.password.encode() if a.password is not None else None
    if a.auth == "high-gmac":
        client = GXDLMSSecureClient(True, a.client_address, server, auth, password, framing)
        c = client.ciphering
        c.security = Security.AUTHENTICATION_ENCRYPTION
        c.systemTitle = bytearray.fromhex(a.system_title)
        c.blockCipherKey = bytearray.fromhex(a.block_key)
        c.authenticationKey = bytearray.fromhex(a.auth_key)
        c.invocationCounter = a.invocation_counter
        if len(c.systemTitle) != 8 or len(c.blockCipherKey) != 16 or len(c.authenticationKey) != 16:
            raise Fail("--system-title must be 8 bytes, --block-key and --auth-key 16 bytes (hex)")
    else:
        client = GXDLMSClient(True, a.client_address, server, auth, password, framing)
    client.maxReceivePDUSize = a.max_pdu
    return client


def connect(link, client, a):
    reply = GXReplyData()
    if a.framing == "hdlc":
        with step("SNRM/UA"):
            link.exchange(client.snrmRequest(), reply)
            client.parseUAResponse(reply.data)
        reply.clear()
    with step("AARQ/AARE"):
        link.exchange_blocks(client.aarqRequest(), reply)
        client.parseAareResponse(reply.data)
    reply.clear()
    if client.authentication > Authentication.LOW:
        with step("HLS pass (reply to HLS authentication)"):
            link.exchange_blocks(client.getApplicationAssociationRequest(), reply)
            client.parseApplicationAssociationResponse(reply.data)


def read_attr(link, client, obj, index):
    reply = GXReplyData()
    link.exchange_blocks(client.read(obj, index)[0], reply)
    return reply.value


def read_register(link, client, ln, cls):
    if cls in (3, 4, 5):
        obj = GXDLMSRegister(ln)
        obj.objectType = ObjectType(cls)
        su = read_attr(link, client, obj, 3 if cls != 5 else 4)
        if not isinstance(su, (list, tuple)) or len(su) != 2:
            raise Fail(f"{obis_display(ln)}: scaler_unit is not a structure of two: {su!r}")
        scaler, unit = int(su[0]), int(su[1])
        raw = read_attr(link, client, obj, 2 if cls != 5 else 3)
    elif cls == 1:
        obj = GXDLMSData(ln)
        scaler, unit = 0, 0
        raw = read_attr(link, client, obj, 2)
    else:
        raise Fail(f"{obis_display(ln)}: class {cls} is not a register (1, 3, 4 or 5)")
    out = {"class": cls, "raw": plain(raw), "scaler": scaler, "unit": unit, "unit_symbol": UNIT_SYMBOLS.get(unit)}
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        out["value"] = raw * (10.0**scaler)
    return out


def read_clock(link, client):
    clock = GXDLMSClock("0.0.1.0.0.255")
    raw = read_attr(link, client, clock, 2)
    dt, deviation = to_datetime(client.settings, raw)
    if dt is None:
        raise Fail(f"clock time is not a date-time: {raw!r}")
    return {"iso": dt.isoformat(), "unix": int(dt.timestamp()), "deviation": deviation}


def read_profile(link, client, ln, start, end):
    pg = GXDLMSProfileGeneric(ln)
    with step(f"profile {obis_display(ln)} capture objects"):
        reply = GXReplyData()
        link.exchange_blocks(client.read(pg, 3)[0], reply)
        client.updateValue(pg, 3, reply.value)
    columns = [f"{o.logicalName}:{co.attributeIndex}" for o, co in pg.captureObjects]
    with step(f"profile {obis_display(ln)} buffer by range"):
        reply = GXReplyData()
        link.exchange_blocks(client.readRowsByRange(pg, GXDateTime(start), GXDateTime(end)), reply)
    rows = []
    for r in reply.value or []:
        if not isinstance(r, (list, tuple)):
            raise Fail(f"profile row is not a structure: {r!r}")
        row = []
        for (o, co), v in zip(pg.captureObjects, r):
            if o.objectType == ObjectType.CLOCK and co.attributeIndex == 2:
                dt, _ = to_datetime(client.settings, v)
                row.append(int(dt.timestamp()) if dt is not None else plain(v))
            else:
                row.append(plain(v))
        rows.append(row)
    return {"obis": obis_display(ln), "columns": columns, "rows": rows}


def release(link, client, a):
    """Release then DISC; errors here are reported too (a meter that cannot release is a bug in a peer test)."""
    reply = GXReplyData()
    with step("release (RLRQ/RLRE)"):
        frames = client.releaseRequest()
        if frames:
            link.exchange_blocks(frames, reply)
    if a.framing == "hdlc":
        reply.clear()
        with step("DISC"):
            link.exchange(client.disconnectRequest(), reply)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, help="TCP port (or --serial)")
    ap.add_argument("--serial", metavar="PATH", help="a serial device or pty instead of TCP (HDLC only)")
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--framing", choices=["hdlc", "wrapper"], default="hdlc")
    ap.add_argument("--client-address", type=lambda s: int(s, 0), default=16)
    ap.add_argument("--server-address", default="1/17", help="L/P or a combined number / wPort")
    ap.add_argument("--auth", choices=["none", "low", "high-gmac"], default="none")
    ap.add_argument("--password")
    ap.add_argument("--block-key")
    ap.add_argument("--auth-key")
    ap.add_argument("--system-title", help="the client's system title, 8 bytes hex")
    ap.add_argument("--invocation-counter", type=int, default=1)
    ap.add_argument("--max-pdu", type=int, default=0xFFFF, help="client max receive PDU size (small: GET blocks)")
    ap.add_argument("--read", action="append", default=[], metavar="OBIS:CLASS")
    ap.add_argument("--clock", action="store_true")
    ap.add_argument("--profile", metavar="OBIS")
    ap.add_argument("--from", dest="start", metavar="ISO")
    ap.add_argument("--to", dest="end", metavar="ISO")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per reply")
    ap.add_argument("--no-release", action="store_true", help="drop the link without RLRQ/DISC")
    ap.add_argument("--trace", action="store_true")
    a = ap.parse_args()

    reads = []
    for r in a.read:
        obis, _, cls = r.rpartition(":")
        try:
            reads.append((parse_obis(obis), int(cls)))
        except ValueError as e:
            ap.error(f"--read {r}: {e} (want OBIS:CLASS, e.g. 1-0:1.8.0:3)")
    if (a.port is None) == (a.serial is None):
        ap.error("give --port (TCP) or --serial (a serial device or pty)")
    if a.serial and a.framing != "hdlc":
        ap.error("--serial carries HDLC only")
    if a.auth == "low" and a.password is None:
        ap.error("--auth low needs --password")
    if a.auth == "high-gmac" and not (a.block_key and a.auth_key and a.system_title):
        ap.error("--auth high-gmac needs --block-key, --auth-key and --system-title")
    if a.profile and not (a.start and a.end):
        ap.error("--profile needs --from and --to")
    try:
        start, end = (parse_time(a.start), parse_time(a.end)) if a.profile else (None, None)
        profile_ln = parse_obis(a.profile) if a.profile else None
    except ValueError as e:
        ap.error(str(e))

    try:
        client = build_client(a)
    except (ValueError, Fail) as e:
        ap.error(str(e))

    # Gurux prints progress notes ("Encryption is applied.") on stdout: keep stdout for the one JSON object.
    stdout, sys.stdout = sys.stdout, sys.stderr
    out = {}
    link = None
    try:
        with step("connect"):
            link = Link(client, a)
        connect(link, client, a)
        if reads:
            out["registers"] = {}
        for ln, cls in reads:
            with step(f"read {obis_display(ln)} class {cls}"):
                out["registers"][obis_display(ln)] = read_register(link, client, ln, cls)
        if a.clock:
            with step("read clock 0-0:1.0.0"):
                out["clock"] = read_clock(link, client)
        if profile_ln:
            out["profile"] = read_profile(link, client, profile_ln, start, end)
        if not a.no_release:
            release(link, client, a)
    except Fail as e:
        print("gurux client: " + " ".join(str(e).split()), file=sys.stderr)
        return 1
    finally:
        if link:
            link.close()
    print(json.dumps(out), file=stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
