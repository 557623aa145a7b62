//! Modbus ADU framing: RTU (`addr | PDU | CRC-16/MODBUS little-endian`) and TCP MBAP
//! (`tid | pid=0 | len | unit | PDU`), and reply matchers for both.
