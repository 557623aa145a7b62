#!/usr/bin/env python3
"""A pymodbus 3.16.1 slave for ami's integration tests (an independent Modbus implementation).

Serves the registers given in a JSON file over Modbus TCP, RTU over TCP, or RTU on a serial device/pty:

    pymodbus_slave.py --framer socket --tcp 5020 --unit 1 --data regs.json
    pymodbus_slave.py --framer rtu --serial /tmp/ttyB --unit 1 --data regs.json

regs.json: {"input": {"0": [u16, ...]}, "holding": {"0": [...]}, "coils": {"0": [0, 1]}, "discrete": {...}}
(keys are 0-based protocol start addresses). Prints "READY" on stdout when it listens.
--delay-first N:MS holds the first N replies for MS milliseconds each (a slave that answers late).
"""
import argparse
import asyncio
import json
import logging
import sys
import time

from pymodbus import FramerType
from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusServerContext,
    ModbusSparseDataBlock,
)
from pymodbus.server import ModbusSerialServer, ModbusTcpServer


# With a sparse block, pymodbus 3.16.1 maps protocol address A to block address A (checked by the
# integration tests); a sequential block would need to start at 1.
OFFSET = 0


def block(spec, bits=False):
    values = {}
    for start, words in (spec or {}).items():
        for i, w in enumerate(words):
            values[int(start) + i + OFFSET] = bool(w) if bits else int(w) & 0xFFFF
    if not values:
        values = {1: False if bits else 0}
    return ModbusSparseDataBlock(values)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--framer", choices=["socket", "rtu"], default="socket")
    ap.add_argument("--tcp", type=int, help="TCP port on 127.0.0.1")
    ap.add_argument("--serial", help="serial device or pty path")
    ap.add_argument("--unit", type=int, action="append", default=[])
    ap.add_argument("--data", required=True)
    ap.add_argument("--delay-first", default="0:0")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    with open(args.data) as f:
        data = json.load(f)
    units = args.unit or [1]
    devices = {
        u: ModbusDeviceContext(
            ir=block(data.get("input")),
            hr=block(data.get("holding")),
            co=block(data.get("coils"), bits=True),
            di=block(data.get("discrete"), bits=True),
        )
        for u in units
    }
    context = ModbusServerContext(devices=devices, single=False)

    n_delay, ms = (int(x) for x in args.delay_first.split(":"))
    state = {"left": n_delay}

    def trace_packet(sending, packet):
        if sending and state["left"] > 0:
            state["left"] -= 1
            time.sleep(ms / 1000.0)  # blocks the loop: the reply leaves late, as from a slow meter
        return packet

    framer = FramerType.SOCKET if args.framer == "socket" else FramerType.RTU
    if args.tcp is not None:
        server = ModbusTcpServer(
            context, framer=framer, address=("127.0.0.1", args.tcp), trace_packet=trace_packet
        )
    else:
        server = ModbusSerialServer(
            context, framer=framer, port=args.serial, baudrate=9600, trace_packet=trace_packet
        )
    task = asyncio.create_task(server.serve_forever())
    # Wait until the listener is up before telling the test.
    for _ in range(100):
        await asyncio.sleep(0.02)
        if server.transport is not None or args.serial:
            break
    print("READY", flush=True)
    await task


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
