//! Arbitrary bytes as a DLMS line: HDLC frame format type 3 deframing with resynchronisation
//! (`ami_link::hdlc`, IEC 62056-46), the stream deframer and the client and server links of
//! `ami_link::hdlc_session` fed the frames, and the TCP wrapper (`ami_link::wrapper`, IEC 62056-47); the
//! APDUs inside go through the APDU harness. Any input must give frames or errors, never a panic. The
//! harness lives in `ami_protocols::dlms::harness`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ami_protocols::dlms::harness::hdlc(data);
});
