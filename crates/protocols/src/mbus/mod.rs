//! Wired M-Bus (EN 13757-2 link layer requests, EN 13757-3 application layer).
//!
//! [`app`] decodes RSP_UD user data (fixed header and variable data records) into typed records with
//! normalized units; [`client`] builds the master's requests (SND_NKE, REQ_UD2 with the FCB, secondary
//! address selection) and runs multi-telegram read-outs and the secondary-address search as sans-IO
//! state machines. Frames and checksums live in `ami_link::mbus`.

pub mod app;
pub mod client;
