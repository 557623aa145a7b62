//! DLMS/COSEM (IEC 62056) application layer for ami.
//!
//! Owns the meaning of DLMS bytes above the link layer (HDLC framing lives in `ami_link::hdlc`,
//! IEC 62056-46): today the A-XDR data codec ([`axdr`], IEC 62056-6-2 / Blue Book DLMS UA 1000-1 and the
//! Green Book DLMS UA 1000-2 chapter 9). Never does I/O and never reads the clock.
//!
//! Panic contract: no byte sequence from a meter panics any decoder here; failures are typed errors.

pub mod axdr;
