#!/usr/bin/env python3
"""Baseline for ami's poll benchmark: a pymodbus 3.16.1 client doing the same reads as ami.

    pymodbus_client_bench.py --port 5020 --unit 1 --polls 500 --blocks input:0:30,input:70:10,...

Each poll reads every block (one request each) and decodes every float32 in it, like `amid read` does.
Prints one JSON line: {"polls": N, "transactions": T, "wall_s": W, "cpu_s": C}.
"""
import argparse
import json
import logging
import struct
import time

from pymodbus.client import ModbusTcpClient


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--unit", type=int, default=1)
    ap.add_argument("--polls", type=int, default=500)
    ap.add_argument("--blocks", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    blocks = []
    for b in args.blocks.split(","):
        table, start, count = b.split(":")
        blocks.append((table, int(start), int(count)))
    client = ModbusTcpClient("127.0.0.1", port=args.port, timeout=2)
    if not client.connect():
        raise SystemExit("cannot connect")

    def poll():
        values = []
        for table, start, count in blocks:
            if table == "input":
                rr = client.read_input_registers(start, count=count, device_id=args.unit)
            else:
                rr = client.read_holding_registers(start, count=count, device_id=args.unit)
            if rr.isError():
                raise SystemExit(f"error reply: {rr}")
            regs = rr.registers
            for i in range(0, len(regs) - 1, 2):
                values.append(struct.unpack(">f", struct.pack(">HH", regs[i], regs[i + 1]))[0])
        return values

    for _ in range(20):  # warm-up
        poll()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.polls):
        poll()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    client.close()
    print(json.dumps({"polls": args.polls, "transactions": args.polls * len(blocks), "wall_s": wall, "cpu_s": cpu}))


if __name__ == "__main__":
    main()
