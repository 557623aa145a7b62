//! Checksums: CRC-16/MODBUS (and later CRC-16/X.25 for HDLC, the M-Bus arithmetic sum).
