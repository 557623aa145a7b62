//! DLMS/COSEM (IEC 62056) application layer for ami.
//!
//! Owns the meaning of DLMS bytes above the link layer (HDLC framing and the HDLC link state live in
//! `ami_link::hdlc` and `ami_link::hdlc_session`, IEC 62056-46; the TCP wrapper in `ami_link::wrapper`,
//! IEC 62056-47; the optical mode E opening in `ami_link::mode_e`, IEC 62056-21):
//! - [`axdr`]: the A-XDR `Data` codec (IEC 62056-6-2 / Blue Book DLMS UA 1000-1, Green Book DLMS UA 1000-2
//!   chapter 9);
//! - [`apdu`]: ACSE and xDLMS APDUs, both directions;
//! - [`security`]: security suite 0 (AES-GCM-128 glo-ciphering, HLS-GMAC);
//! - [`client`]: the sans-IO client association (AARQ/AARE, HLS passes 3 and 4, GET/SET/ACTION with blocks);
//! - [`cosem`]: interface classes read with meaning (register scaler/unit, profile generic, clock);
//! - [`describe`]: HDLC frames, wrapper frames and APDUs printed for a human (`amid decode --protocol dlms`);
//! - [`session`]: the async driver that runs a client association over an `ami_link::BusHandle`.
//!
//! Only [`session`] does I/O (through the bus); nothing here reads the clock except where a caller passes
//! it in. Panic contract: no byte sequence from a meter panics any decoder here; failures are typed errors.

pub mod apdu;
pub mod axdr;
pub mod client;
pub mod cosem;
pub mod describe;
#[cfg(any(test, feature = "fuzzing"))]
pub mod harness;
pub mod security;
pub mod session;
