//! Checksums: CRC-16/MODBUS (Modbus RTU) and CRC-16/X.25 (HDLC HCS/FCS, IEC 62056-46).
//!
//! Pure functions over byte slices; table-driven; never panic.

/// CRC-16/MODBUS lookup table: reflected polynomial 0xA001 (0x8005 reversed), one entry per byte value.
const MODBUS_TABLE: [u16; 256] = modbus_table();

const fn modbus_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        // `i < 256`, so the cast is lossless.
        let mut crc = i as u16;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// CRC-16/MODBUS (poly 0x8005 reflected = 0xA001, init 0xFFFF, no final xor) of `data`.
///
/// The Modbus RTU ADU carries it low byte first (Modbus over Serial Line V1.02, 2.5.1.2): for
/// `01 03 00 00 00 0A` the value is `0xCDC5` and the wire bytes are `C5 CD`.
pub fn crc16_modbus(data: &[u8]) -> u16 {
    data.iter().fold(0xFFFF_u16, |crc, &b| {
        let index = usize::from((crc ^ u16::from(b)) & 0x00FF);
        // `index <= 0xFF` and the table has 256 entries: cannot go out of bounds.
        (crc >> 8) ^ MODBUS_TABLE[index]
    })
}

/// CRC-16/X.25 lookup table: reflected polynomial 0x8408 (0x1021 reversed), one entry per byte value.
const X25_TABLE: [u16; 256] = x25_table();

const fn x25_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        // `i < 256`, so the cast is lossless.
        let mut crc = i as u16;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x8408 } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// CRC-16/X.25 (poly 0x1021 reflected = 0x8408, init 0xFFFF, final xor 0xFFFF) of `data`: the HCS and FCS
/// of HDLC frames (IEC 62056-46 / ISO/IEC 13239 §4.2.5). The check value of ASCII `"123456789"` is `0x906E`.
///
/// HDLC carries it low byte first: append `crc16_x25(frame).to_le_bytes()`.
pub fn crc16_x25(data: &[u8]) -> u16 {
    let crc = data.iter().fold(0xFFFF_u16, |crc, &b| {
        let index = usize::from((crc ^ u16::from(b)) & 0x00FF);
        // `index <= 0xFF` and the table has 256 entries: cannot go out of bounds.
        (crc >> 8) ^ X25_TABLE[index]
    });
    crc ^ 0xFFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit-by-bit reference implementation straight from the Modbus serial line spec (6.2.2).
    fn crc16_modbus_bitwise(data: &[u8]) -> u16 {
        let mut crc = 0xFFFF_u16;
        for &b in data {
            crc ^= u16::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
            }
        }
        crc
    }

    #[test]
    fn read_holding_registers_request_vector() {
        // 01 unit, 03 function, 0000 start, 000A quantity → wire CRC C5 CD.
        let crc = crc16_modbus(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A]);
        assert_eq!(crc, 0xCDC5);
        assert_eq!(crc.to_le_bytes(), [0xC5, 0xCD]);
    }

    #[test]
    fn catalogue_check_value() {
        // CRC catalogue "check" for CRC-16/MODBUS over ASCII "123456789".
        assert_eq!(crc16_modbus(b"123456789"), 0x4B37);
        assert_eq!(crc16_modbus(&[]), 0xFFFF);
    }

    #[test]
    fn a_frame_with_its_crc_appended_has_residue_zero() {
        let mut frame = vec![0x11, 0x06, 0x00, 0x01, 0x00, 0x03];
        frame.extend_from_slice(&crc16_modbus(&frame).to_le_bytes());
        assert_eq!(frame, [0x11, 0x06, 0x00, 0x01, 0x00, 0x03, 0x9A, 0x9B]);
        assert_eq!(crc16_modbus(&frame), 0);
    }

    proptest::proptest! {
        #[test]
        fn table_matches_bitwise(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            proptest::prop_assert_eq!(crc16_modbus(&data), crc16_modbus_bitwise(&data));
        }
    }
}
