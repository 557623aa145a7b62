//! DLMS/COSEM bytes explained for a human (`amid decode --protocol dlms`).
//!
//! [`describe`] takes a capture — HDLC frames (IEC 62056-46, `7E … 7E`), wrapper frames (IEC 62056-47,
//! `00 01 …`) or one bare APDU — and prints one field per line: the frame (format, segmentation, client
//! SAP and server upper/lower address, control field as `I(N(S)=…, N(R)=…, P/F)`, `RR`, `SNRM`, `UA`, …,
//! HCS and FCS checked, SNRM/UA parameters), the LLC header, then the APDU (IEC 62056-5-3 / Green Book
//! DLMS UA 1000-2 §9): AARQ/AARE fields with names (context, mechanism, result and diagnostic,
//! conformance bits, max PDU size), GET/SET/ACTION with OBIS codes as `1-0:1.8.0*255`, class and attribute
//! names, selective access, `Data` values pretty-printed (date-times as ISO 8601 with the UTC offset,
//! octet strings as hex and, when they are one, as an OBIS code or a date-time), data blocks, errors by
//! name, and glo-ciphered envelopes (security control, invocation counter, payload length — never
//! decrypted), and data-notification pushes (HAN ports). Segmented HDLC frames are reassembled and the
//! APDU is described after its last segment.
//!
//! An LLS password (AARQ calling-authentication-value with mechanism 1) and a dedicated key are never
//! printed, only their lengths.
//!
//! Panic contract: [`describe`] never panics on any input and its output is bounded by a small multiple of
//! the input (data values nest at most [`axdr::MAX_DEPTH`](super::axdr::MAX_DEPTH) levels).

use std::fmt::Write as _;

use ami_link::crc::crc16_x25;
use ami_link::hdlc::{Address, Control, Frame, FrameError, FLAG};
use ami_link::wrapper;

use super::apdu::{
    Aare, Aarq, ActionRequest, ActionResponse, Apdu, ApplicationContext, AttributeDescriptor, Conformance,
    DataAccessResult, DataBlockG, GetDataResult, GetRequest, GetResponse, InitiateRequest, InitiateResponse, Mechanism,
    MethodDescriptor, Release, SelectiveAccess, SetRequest, SetResponse, SourceDiagnostic,
};
use super::axdr::{Data, DateTime, DEVIATION_NOT_SPECIFIED, YEAR_NOT_SPECIFIED};

/// Longest hex dump printed for one field; longer ones are cut with the byte count.
const MAX_HEX: usize = 256;
/// Largest reassembled APDU kept from segmented HDLC frames (the largest APDU a client accepts is 65535).
const MAX_REASSEMBLY: usize = 0x1_0000;
/// Most array/structure elements printed per level.
const MAX_ELEMENTS: usize = 64;

/// Describes every frame (or the bare APDU) in `bytes`, one field per line. Never fails: bytes that are
/// neither are shown as such, with the reason.
///
/// ```
/// use ami_protocols::dlms::describe::describe;
/// // A GET.request of 1-0:1.8.0*255 attribute 2 in an HDLC I-frame (Gurux client output).
/// let frame = [
///     0x7E, 0xA0, 0x19, 0x03, 0x21, 0x32, 0x6F, 0xD8, 0xE6, 0xE6, 0x00, 0xC0, 0x01, 0xC1, 0x00, 0x03, 0x01,
///     0x00, 0x01, 0x08, 0x00, 0xFF, 0x02, 0x00, 0x32, 0x68, 0x7E,
/// ];
/// let text = describe(&frame);
/// assert!(text.contains("I(N(S)=1, N(R)=1, P=1)"));
/// assert!(text.contains("class 3 (Register), 1-0:1.8.0*255, attribute 2 (value)"));
/// ```
pub fn describe(bytes: &[u8]) -> String {
    let mut out = String::new();
    if bytes.is_empty() {
        out.push_str("empty input\n");
        return out;
    }
    let mut at = 0usize;
    let mut index = 0usize;
    let mut reassembly: Vec<u8> = Vec::new();
    while at < bytes.len() {
        let rest = bytes.get(at..).unwrap_or_default();
        index += 1;
        if rest.first() == Some(&FLAG) {
            match hdlc(&mut out, index, at, rest, &mut reassembly) {
                Some(used) => at += used.max(1),
                None => break,
            }
        } else if rest.starts_with(&[0x00, 0x01]) && rest.len() >= wrapper::HEADER_LEN {
            match wrapper::decode(rest) {
                Ok(Some((h, apdu, used))) => {
                    let header_at = out.len();
                    let _ = writeln!(out, "  version:     {}", h.version);
                    let _ = writeln!(out, "  source:      wPort {}{}", h.source, port_hint(h.source, h.destination));
                    let _ = writeln!(out, "  destination: wPort {}", h.destination);
                    let _ = writeln!(out, "  length:      {} bytes", h.length);
                    let secrets = apdu_block(&mut out, &apdu, "  ");
                    let raw = rest.get(..used).unwrap_or(rest);
                    let header =
                        format!("wrapper frame {index} (bytes {at}..{}): {}\n", at + used, hex_masked(raw, &secrets));
                    out.insert_str(header_at, &header);
                    at += used;
                }
                Ok(None) => {
                    let announced = rest.get(6..8).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                    let _ = writeln!(
                        out,
                        "truncated wrapper frame at byte {at}: the header announces {announced} APDU bytes, {} follow: {}",
                        rest.len() - wrapper::HEADER_LEN,
                        hex(rest)
                    );
                    break;
                }
                Err(e) => {
                    let _ = writeln!(out, "not a wrapper frame at byte {at}: {e}: {}", hex(rest));
                    break;
                }
            }
        } else {
            if index > 1 {
                let _ = writeln!(out, "bytes {at}..{} (not a frame, read as an APDU):", bytes.len());
            }
            let start = out.len();
            let secrets = apdu_block(&mut out, rest, "");
            if !secrets.is_empty() {
                // A bare APDU is not dumped as a whole, but a field dump could still hold the secret.
                let masked = mask_text(out.get(start..).unwrap_or_default(), &secrets);
                out.truncate(start);
                out.push_str(&masked);
            }
            break;
        }
    }
    if !reassembly.is_empty() {
        let _ = writeln!(
            out,
            "incomplete segmented APDU: {} bytes received, the last segment is missing: {}",
            reassembly.len(),
            hex(&reassembly)
        );
    }
    out
}

/// Describes the HDLC frame at the start of `rest` (offset `at` in the input). Returns the bytes it took,
/// or `None` when nothing more can be read from the input.
fn hdlc(out: &mut String, index: usize, at: usize, rest: &[u8], reassembly: &mut Vec<u8>) -> Option<usize> {
    let (frame, used, checks) = match Frame::decode(rest) {
        Ok(Some((frame, used))) => (frame, used, "HCS/FCS ok".to_string()),
        Ok(None) => {
            let announced = rest.get(1..3).map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]]) & 0x07FF));
            let _ = writeln!(
                out,
                "truncated HDLC frame at byte {at}: the format field announces {announced} bytes, {} follow: {}",
                rest.len().saturating_sub(2),
                hex(rest)
            );
            return None;
        }
        Err(e @ (FrameError::Hcs { .. } | FrameError::Fcs { .. })) => match repaired(rest) {
            Some((frame, used)) => (frame, used, format!("BAD: {e}")),
            None => return skip_noise(out, at, rest, &e),
        },
        Err(e) => return skip_noise(out, at, rest, &e),
    };
    let raw = rest.get(..used).unwrap_or(rest);
    let header_at = out.len();
    let mut secrets = Vec::new();
    let length = rest.get(1..3).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) & 0x07FF);
    let _ = writeln!(
        out,
        "  format:      type 3, length {length}{}",
        if frame.segmented { ", segmented (more segments follow)" } else { "" }
    );
    // Which address is the server: the control field or the LLC header tells the direction.
    let llc = frame.info.get(..3);
    let to_server = match frame.control {
        Control::SNRM { .. } | Control::DISC { .. } => Some(true),
        Control::UA { .. } | Control::DM { .. } | Control::FRMR { .. } => Some(false),
        _ if reassembly.is_empty() && llc == Some(&[0xE6, 0xE6, 0x00][..]) => Some(true),
        _ if reassembly.is_empty() && llc == Some(&[0xE6, 0xE7, 0x00][..]) => Some(false),
        _ => match (frame.dest, frame.src) {
            (Address::One(_), Address::Two { .. } | Address::Four { .. }) => Some(false),
            (Address::Two { .. } | Address::Four { .. }, Address::One(_)) => Some(true),
            _ => None,
        },
    };
    let (dest_role, src_role) = match to_server {
        Some(true) => (Role::Server, Role::Client),
        Some(false) => (Role::Client, Role::Server),
        None => (Role::Unknown, Role::Unknown),
    };
    let _ = writeln!(out, "  destination: {}", address(frame.dest, dest_role));
    let _ = writeln!(out, "  source:      {}", address(frame.src, src_role));
    let _ = writeln!(out, "  control:     {} (0x{:02X})", control(frame.control), u8::from(frame.control));
    let _ = writeln!(out, "  checks:      {}", if frame.info.is_empty() { checks.replace("HCS/", "") } else { checks });
    if !frame.info.is_empty() {
        secrets = hdlc_information(out, &frame, reassembly);
    }
    let header = format!("HDLC frame {index} (bytes {at}..{}): {}\n", at + used, hex_masked(raw, &secrets));
    out.insert_str(header_at, &header);
    Some(used)
}

/// The information field of an HDLC frame: SNRM/UA parameters, or LLC and APDU (reassembled across
/// segments). Returns the secrets found (to mask in the frame's hex dump).
fn hdlc_information(out: &mut String, frame: &Frame, reassembly: &mut Vec<u8>) -> Vec<Vec<u8>> {
    match frame.control {
        Control::SNRM { .. } | Control::UA { .. } => {
            hdlc_parameters(out, &frame.info);
            Vec::new()
        }
        Control::I { .. } | Control::UI { .. } => {
            let mut payload = frame.info.as_slice();
            if reassembly.is_empty() {
                match payload.get(..3) {
                    Some([0xE6, 0xE6, 0x00]) => {
                        let _ = writeln!(out, "  LLC:         E6 E6 00 (client → server)");
                        payload = payload.get(3..).unwrap_or_default();
                    }
                    Some([0xE6, 0xE7, 0x00]) => {
                        let _ = writeln!(out, "  LLC:         E6 E7 00 (server → client)");
                        payload = payload.get(3..).unwrap_or_default();
                    }
                    _ => {
                        let _ =
                            writeln!(out, "  LLC:         none (information field does not start with E6 E6/E7 00)");
                    }
                }
            }
            if frame.segmented || !reassembly.is_empty() {
                if reassembly.len().saturating_add(payload.len()) > MAX_REASSEMBLY {
                    let _ = writeln!(out, "  segment:     reassembly exceeds {MAX_REASSEMBLY} bytes; dropped");
                    reassembly.clear();
                    return Vec::new();
                }
                reassembly.extend_from_slice(payload);
                if frame.segmented {
                    let _ = writeln!(
                        out,
                        "  segment:     {} bytes of a segmented APDU ({} so far, more follow)",
                        payload.len(),
                        reassembly.len()
                    );
                    return Vec::new();
                }
                let whole = std::mem::take(reassembly);
                let _ = writeln!(out, "  segment:     last segment; reassembled APDU of {} bytes", whole.len());
                apdu_block(out, &whole, "  ")
            } else {
                apdu_block(out, payload, "  ")
            }
        }
        _ => {
            let _ = writeln!(out, "  information: {}", hex(&frame.info));
            Vec::new()
        }
    }
}

/// Reports bytes that are not a frame and moves to the next plausible frame start (`7E A`), if any.
fn skip_noise(out: &mut String, at: usize, rest: &[u8], e: &FrameError) -> Option<usize> {
    let next = rest
        .windows(2)
        .enumerate()
        .skip(1)
        .find(|(_, w)| w.first() == Some(&FLAG) && w.get(1).is_some_and(|b| b & 0xF0 == 0xA0))
        .map(|(i, _)| i);
    let end = next.unwrap_or(rest.len());
    let _ = writeln!(out, "not an HDLC frame at byte {at} ({e}): {}", hex(rest.get(..end).unwrap_or(rest)));
    next
}

/// Decodes a frame whose HCS or FCS is wrong by recomputing both, so its fields can still be shown.
fn repaired(rest: &[u8]) -> Option<(Frame, usize)> {
    let len = usize::from(u16::from_be_bytes([*rest.get(1)?, *rest.get(2)?]) & 0x07FF);
    let mut copy = rest.get(..len + 2)?.to_vec();
    // Header: flag, format (2), destination and source addresses (LSB set on their last byte), control.
    let mut at = 3;
    for _ in 0..2 {
        let n = copy.get(at..)?.iter().take(4).position(|b| b & 1 == 1)? + 1;
        at += n;
    }
    let control_end = at + 1;
    let fcs_at = len - 1;
    if fcs_at > control_end + 2 {
        let hcs = crc16_x25(copy.get(1..control_end)?).to_le_bytes();
        copy.get_mut(control_end..control_end + 2)?.copy_from_slice(&hcs);
    }
    let fcs = crc16_x25(copy.get(1..fcs_at)?).to_le_bytes();
    copy.get_mut(fcs_at..fcs_at + 2)?.copy_from_slice(&fcs);
    let (frame, _) = Frame::decode(&copy).ok()??;
    Some((frame, len + 2))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Server,
    Unknown,
}

fn address(a: Address, role: Role) -> String {
    let server = |upper: u16, lower: Option<u16>, bytes: usize| {
        let name = match upper {
            0 => " (no station)",
            1 => " (management logical device)",
            0x7F if bytes == 1 => " (all stations)",
            0x3FFF => " (all stations)",
            _ => "",
        };
        match lower {
            Some(l) => format!("server upper {upper}{name}, lower {l} ({bytes} bytes)"),
            None => format!("server upper {upper}{name} (1 byte)"),
        }
    };
    match (a, role) {
        (Address::One(v), Role::Client) => {
            let name = match v {
                0x10 => " (public client)",
                0x01 => " (management client)",
                0x7F => " (all stations)",
                _ => "",
            };
            format!("client SAP {v}{name}")
        }
        (Address::One(v), Role::Server) => server(u16::from(v), None, 1),
        (Address::One(v), Role::Unknown) => format!("address {v} (1 byte: a client SAP or a server upper address)"),
        (Address::Two { upper, lower }, _) => server(u16::from(upper), Some(u16::from(lower)), 2),
        (Address::Four { upper, lower }, _) => server(upper, Some(lower), 4),
    }
}

fn control(c: Control) -> String {
    let pf = |p: bool| if p { ", P/F=1" } else { "" };
    match c {
        Control::I { send_seq, recv_seq, poll } => {
            format!("I(N(S)={send_seq}, N(R)={recv_seq}{})", if poll { ", P=1" } else { "" })
        }
        Control::RR { recv_seq, poll } => format!("RR(N(R)={recv_seq}{})", pf(poll)),
        Control::RNR { recv_seq, poll } => format!("RNR(N(R)={recv_seq}{})", pf(poll)),
        Control::SNRM { poll } => format!("SNRM{}", if poll { " (P=1)" } else { "" }),
        Control::DISC { poll } => format!("DISC{}", if poll { " (P=1)" } else { "" }),
        Control::UA { poll } => format!("UA{}", if poll { " (F=1)" } else { "" }),
        Control::DM { poll } => format!("DM (disconnected mode){}", if poll { " (F=1)" } else { "" }),
        Control::FRMR { poll } => format!("FRMR (frame reject){}", if poll { " (F=1)" } else { "" }),
        Control::UI { poll } => format!("UI{}", pf(poll)),
        Control::Unknown(b) => format!("unknown control 0x{b:02X}"),
    }
}

/// The SNRM/UA information field: `81 80 len` and parameters (IEC 62056-46 §6.4.4.4.3.2).
fn hdlc_parameters(out: &mut String, info: &[u8]) {
    let (Some(&[0x81, 0x80, len]), Some(mut params)) =
        (info.get(..3).map(|s| [s[0], s[1], s[2]]).as_ref(), info.get(3..))
    else {
        let _ = writeln!(out, "  information: {} (not an HDLC parameter field 81 80 …)", hex(info));
        return;
    };
    if usize::from(len) != params.len() {
        let _ = writeln!(out, "  parameters:  group length {len} but {} bytes follow", params.len());
    }
    let _ = writeln!(out, "  parameters:");
    while let Some((&id, r)) = params.split_first() {
        let Some((&n, r)) = r.split_first() else {
            let _ = writeln!(out, "    parameter 0x{id:02X} without a length");
            return;
        };
        let Some(value) = r.get(..usize::from(n)) else {
            let _ = writeln!(out, "    parameter 0x{id:02X}: length {n} runs past the end: {}", hex(r));
            return;
        };
        params = r.get(usize::from(n)..).unwrap_or_default();
        let v = value.iter().fold(0u64, |acc, &b| acc.wrapping_shl(8) | u64::from(b));
        let name = match id {
            0x05 => "max information field length, transmit",
            0x06 => "max information field length, receive",
            0x07 => "window size, transmit",
            0x08 => "window size, receive",
            _ => "unknown parameter",
        };
        let _ = writeln!(out, "    {name} (0x{id:02X}): {v}");
    }
}

/// Describes the APDU in `bytes`, each line prefixed by `indent`.
/// Returns the secrets (LLS password, dedicated key) the APDU carries, which the caller masks in dumps.
fn apdu_block(out: &mut String, bytes: &[u8], indent: &str) -> Vec<Vec<u8>> {
    if bytes.is_empty() {
        let _ = writeln!(out, "{indent}APDU: none (empty)");
        return Vec::new();
    }
    if bytes.first() == Some(&15) {
        if let Some(()) = data_notification(out, bytes, indent) {
            return Vec::new();
        }
    }
    match Apdu::decode(bytes) {
        Ok(apdu) => {
            let mut w = Writer { out, indent: indent.to_string(), secrets: Vec::new() };
            w.apdu(&apdu);
            w.secrets
        }
        Err(e) => {
            let _ = writeln!(out, "{indent}APDU: not decoded ({e}): {}", hex(bytes));
            let name = apdu_name(bytes.first().copied().unwrap_or(0));
            if !name.is_empty() {
                let _ = writeln!(out, "{indent}  tag 0x{:02X} is {name}", bytes.first().copied().unwrap_or(0));
            }
            Vec::new()
        }
    }
}

/// A data-notification push (tag 15, Green Book §9.3.10): long-invoke-id-and-priority (4 bytes), an
/// optional date-time (an octet string without its tag: `0C` and 12 bytes, or `00` when absent; some meters
/// add a stray `09` tag), and the notification body, one `Data`. `None` when the bytes are not one.
fn data_notification(out: &mut String, bytes: &[u8], indent: &str) -> Option<()> {
    let id = u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?);
    let mut at = 5;
    let mut stray_tag = false;
    if bytes.get(at) == Some(&0x09) && bytes.get(at + 1) == Some(&0x0C) {
        stray_tag = true;
        at += 1;
    }
    let time = match bytes.get(at)? {
        0x00 => {
            at += 1;
            None
        }
        0x0C => {
            let dt = DateTime::from_bytes(bytes.get(at + 1..at + 13)?)?;
            at += 13;
            Some(dt)
        }
        _ => return None,
    };
    let (body, used) = Data::decode(bytes.get(at..)?).ok()?;
    if at + used != bytes.len() {
        return None;
    }
    let mut w = Writer { out, indent: indent.to_string(), secrets: Vec::new() };
    w.line("APDU: data-notification (15, 0x0F)");
    w.nested(|w| {
        w.line(format!("long invoke id: {} (0x{id:08X})", id & 0x00FF_FFFF));
        match time {
            Some(dt) => w.line(format!(
                "date-time:      {}{}",
                datetime_text(&dt),
                if stray_tag { " (sent with a stray octet-string tag 09)" } else { "" }
            )),
            None => w.line("date-time:      absent"),
        }
        w.line("notification body:");
        w.nested(|w| w.data(&body, 0));
    });
    Some(())
}

/// The name of an APDU tag, for tags this layer does not decode too.
fn apdu_name(tag: u8) -> &'static str {
    match tag {
        1 => "InitiateRequest",
        8 => "InitiateResponse",
        14 => "ConfirmedServiceError",
        15 => "data-notification",
        0x60 => "AARQ",
        0x61 => "AARE",
        0x62 => "RLRQ",
        0x63 => "RLRE",
        192 => "GET.request",
        193 => "SET.request",
        194 => "event-notification-request",
        195 => "ACTION.request",
        196 => "GET.response",
        197 => "SET.response",
        199 => "ACTION.response",
        216 => "exception-response",
        33 => "glo-initiate-request",
        40 => "glo-initiate-response",
        46 => "glo-confirmed-service-error",
        200 => "glo-get-request",
        201 => "glo-set-request",
        203 => "glo-action-request",
        204 => "glo-get-response",
        205 => "glo-set-response",
        207 => "glo-action-response",
        219 => "general-glo-ciphering",
        _ => "",
    }
}

/// Writes indented lines.
struct Writer<'a> {
    out: &'a mut String,
    indent: String,
    /// Secrets met (LLS password, dedicated key): never printed, masked in the frame dumps.
    secrets: Vec<Vec<u8>>,
}

impl Writer<'_> {
    fn line(&mut self, text: impl AsRef<str>) {
        let _ = writeln!(self.out, "{}{}", self.indent, text.as_ref());
    }

    fn nested(&mut self, f: impl FnOnce(&mut Self)) {
        self.indent.push_str("  ");
        f(self);
        let n = self.indent.len().saturating_sub(2);
        self.indent.truncate(n);
    }

    fn apdu(&mut self, apdu: &Apdu) {
        let tag = apdu.tag();
        self.line(format!("APDU: {} ({tag}, 0x{tag:02X})", apdu_name(tag)));
        self.nested(|w| match apdu {
            Apdu::InitiateRequest(r) => w.initiate_request(r),
            Apdu::InitiateResponse(r) => w.initiate_response(r),
            Apdu::ConfirmedServiceError(e) => {
                w.line(format!("service: {} ({})", service_name(e.service), e.service));
                w.line(format!("error:   {} / {}", error_class_name(e.class), e.value));
            }
            Apdu::Aarq(a) => w.aarq(a),
            Apdu::Aare(a) => w.aare(a),
            Apdu::Rlrq(r) => w.release(r, true),
            Apdu::Rlre(r) => w.release(r, false),
            Apdu::GetRequest(r) => w.get_request(r),
            Apdu::SetRequest(r) => w.set_request(r),
            Apdu::ActionRequest(r) => w.action_request(r),
            Apdu::GetResponse(r) => w.get_response(r),
            Apdu::SetResponse(r) => w.set_response(r),
            Apdu::ActionResponse(r) => w.action_response(r),
            Apdu::ExceptionResponse(e) => {
                let state = match e.state_error {
                    1 => "service-not-allowed",
                    2 => "service-unknown",
                    _ => "unknown",
                };
                let service = match e.service_error {
                    1 => "operation-not-possible",
                    2 => "service-not-supported",
                    3 => "other-reason",
                    4 => "pdu-too-long",
                    5 => "deciphering-error",
                    6 => "invocation-counter-error",
                    _ => "unknown",
                };
                w.line(format!("state-error:   {state} ({})", e.state_error));
                w.line(format!("service-error: {service} ({})", e.service_error));
            }
            Apdu::GloCiphered(g) => w.ciphered(None, g.security_control, g.invocation_counter, g.payload.len()),
            Apdu::GeneralGloCiphering(g) => {
                w.ciphered(Some(&g.system_title), g.security_control, g.invocation_counter, g.payload.len());
            }
        });
    }

    fn ciphered(&mut self, system_title: Option<&[u8]>, sc: u8, ic: u32, payload: usize) {
        if let Some(st) = system_title {
            self.line(format!("system title:       {}", system_title_text(st)));
        }
        let mut what = Vec::new();
        if sc & 0x10 != 0 {
            what.push("authenticated");
        }
        if sc & 0x20 != 0 {
            what.push("encrypted");
        }
        if sc & 0x40 != 0 {
            what.push("broadcast key");
        }
        if sc & 0x80 != 0 {
            what.push("compressed");
        }
        let what = if what.is_empty() { "neither authenticated nor encrypted".to_string() } else { what.join(", ") };
        self.line(format!("security control:   0x{sc:02X} ({what}, security suite {})", sc & 0x0F));
        self.line(format!("invocation counter: {ic}"));
        let tag = if sc & 0x10 != 0 { " including the 12-byte authentication tag" } else { "" };
        self.line(format!("payload:            {payload} bytes{tag} (not decrypted here)"));
    }

    fn initiate_request(&mut self, r: &InitiateRequest) {
        if let Some(k) = &r.dedicated_key {
            self.line(format!("dedicated key:        {} bytes (not shown)", k.len()));
            self.secrets.push(k.clone());
        }
        self.line(format!("response allowed:     {}", r.response_allowed));
        if let Some(q) = r.proposed_quality_of_service {
            self.line(format!("quality of service:   {q}"));
        }
        self.line(format!("DLMS version:         {}", r.proposed_dlms_version));
        self.conformance("proposed conformance", r.proposed_conformance);
        self.line(format!("client max PDU size:  {}", pdu_size(r.client_max_receive_pdu_size)));
    }

    fn initiate_response(&mut self, r: &InitiateResponse) {
        if let Some(q) = r.negotiated_quality_of_service {
            self.line(format!("quality of service:   {q}"));
        }
        self.line(format!("DLMS version:         {}", r.negotiated_dlms_version));
        self.conformance("negotiated conformance", r.negotiated_conformance);
        self.line(format!("server max PDU size:  {}", pdu_size(r.server_max_receive_pdu_size)));
        let vaa = match r.vaa_name {
            0x0007 => " (logical name referencing)",
            0xFA00 => " (short name referencing)",
            _ => "",
        };
        self.line(format!("VAA name:             0x{:04X}{vaa}", r.vaa_name));
    }

    fn conformance(&mut self, label: &str, c: Conformance) {
        let names: Vec<&str> =
            CONFORMANCE_BITS.iter().filter(|(bit, _)| c.has(Conformance::bit(*bit))).map(|(_, n)| *n).collect();
        self.line(format!("{label}: 0x{:06X}", c.0 & 0xFF_FFFF));
        self.nested(|w| {
            if names.is_empty() {
                w.line("(no service)");
            }
            for chunk in names.chunks(4) {
                w.line(chunk.join(", "));
            }
        });
    }

    fn user_information(&mut self, ui: &[u8], request: bool) {
        self.line(format!("user-information:   {} bytes", ui.len()));
        self.nested(|w| match Apdu::decode(ui) {
            Ok(apdu) => w.apdu(&apdu),
            Err(e) => {
                let what = if request { "InitiateRequest" } else { "InitiateResponse" };
                w.line(format!("not an {what} ({e}): {}", hex(ui)));
            }
        });
    }

    fn aarq(&mut self, a: &Aarq) {
        self.line(format!("application context: {}", context_name(a.application_context)));
        if let Some(t) = &a.calling_ap_title {
            self.line(format!("calling AP title:    {}", system_title_text(t)));
        }
        match a.mechanism {
            Some(m) => self.line(format!("mechanism:           {}", mechanism_name(m))),
            None => self.line("mechanism:           none given (lowest level security)"),
        }
        if let Some(v) = &a.calling_authentication_value {
            if a.mechanism == Some(Mechanism::Lls) {
                self.line(format!("calling authentication value: LLS password, {} bytes (not shown)", v.len()));
                self.secrets.push(v.clone());
            } else {
                self.line(format!("calling authentication value: challenge CtoS {}", hex(v)));
            }
        }
        if let Some(ui) = &a.user_information {
            self.user_information(ui, true);
        }
    }

    fn aare(&mut self, a: &Aare) {
        self.line(format!("application context: {}", context_name(a.application_context)));
        let result = match a.result {
            0 => "accepted",
            1 => "rejected-permanent",
            2 => "rejected-transient",
            _ => "unknown",
        };
        self.line(format!("result:              {result} ({})", a.result));
        let diagnostic = match a.diagnostic {
            SourceDiagnostic::User(v) => {
                let name = match v {
                    0 => "null",
                    1 => "no-reason-given",
                    2 => "application-context-name-not-supported",
                    11 => "authentication-mechanism-name-not-recognised",
                    12 => "authentication-mechanism-name-required",
                    13 => "authentication-failure",
                    14 => "authentication-required",
                    _ => "unknown",
                };
                format!("acse-service-user {name} ({v})")
            }
            SourceDiagnostic::Provider(v) => {
                let name = match v {
                    0 => "null",
                    1 => "no-reason-given",
                    2 => "no-common-acse-version",
                    _ => "unknown",
                };
                format!("acse-service-provider {name} ({v})")
            }
        };
        self.line(format!("diagnostic:          {diagnostic}"));
        if let Some(t) = &a.responding_ap_title {
            self.line(format!("responding AP title: {}", system_title_text(t)));
        }
        if let Some(m) = a.mechanism {
            self.line(format!("mechanism:           {}", mechanism_name(m)));
        }
        if let Some(v) = &a.responding_authentication_value {
            self.line(format!("responding authentication value: challenge StoC {}", hex(v)));
        }
        if let Some(ui) = &a.user_information {
            self.user_information(ui, false);
        }
    }

    fn release(&mut self, r: &Release, request: bool) {
        if let Some(reason) = r.reason {
            let name = match (request, reason) {
                (_, 0) => "normal",
                (true, 1) => "urgent",
                (false, 1) => "not-finished",
                (_, 30) => "user-defined",
                _ => "unknown",
            };
            self.line(format!("reason: {name} ({reason})"));
        }
        if let Some(ui) = &r.user_information {
            self.user_information(ui, request);
        }
    }

    fn invoke(&mut self, invoke: super::apdu::InvokeId) {
        let b = invoke.0;
        let class = if b & 0x40 != 0 { "confirmed" } else { "unconfirmed" };
        let prio = if b & 0x80 != 0 { "high" } else { "normal" };
        self.line(format!("invoke id:   {} ({class}, {prio} priority; 0x{b:02X})", invoke.id()));
    }

    fn attribute(&mut self, a: &AttributeDescriptor) {
        self.line(format!(
            "attribute:   class {} ({}), {}, attribute {}",
            a.class_id,
            class_name(a.class_id),
            obis(&a.instance),
            attribute_text(a.class_id, a.attribute)
        ));
    }

    fn method(&mut self, m: &MethodDescriptor) {
        self.line(format!(
            "method:      class {} ({}), {}, method {}",
            m.class_id,
            class_name(m.class_id),
            obis(&m.instance),
            method_text(m.class_id, m.method)
        ));
    }

    fn access(&mut self, access: Option<&SelectiveAccess>) {
        let Some(s) = access else { return };
        let name = match s.selector {
            1 => "range_descriptor (by range)",
            2 => "entry_descriptor (by entry)",
            _ => "selector",
        };
        self.line(format!("selective access: {name} ({})", s.selector));
        self.nested(|w| match (s.selector, &s.parameters) {
            (1, Data::Structure(items)) if items.len() == 4 => {
                w.data_field("restricting object", items.first());
                w.data_field("from", items.get(1));
                w.data_field("to", items.get(2));
                w.data_field("selected columns", items.get(3));
            }
            (2, Data::Structure(items)) if items.len() == 4 => {
                w.data_field("from entry", items.first());
                w.data_field("to entry", items.get(1));
                w.data_field("from column", items.get(2));
                w.data_field("to column", items.get(3));
            }
            (_, d) => w.data(d, 0),
        });
    }

    fn data_field(&mut self, label: &str, d: Option<&Data>) {
        match d {
            Some(d) => {
                self.line(format!("{label}:"));
                self.nested(|w| w.data(d, 0));
            }
            None => self.line(format!("{label}: missing")),
        }
    }

    fn get_request(&mut self, r: &GetRequest) {
        match r {
            GetRequest::Normal { invoke, attribute, access } => {
                self.line("get-request-normal (1)");
                self.invoke(*invoke);
                self.attribute(attribute);
                self.access(access.as_ref());
            }
            GetRequest::Next { invoke, block } => {
                self.line("get-request-next (2)");
                self.invoke(*invoke);
                self.line(format!("block:       {block} received, send the next"));
            }
            GetRequest::WithList { invoke, items } => {
                self.line(format!("get-request-with-list (3), {} items", items.len()));
                self.invoke(*invoke);
                for (i, (a, access)) in items.iter().enumerate() {
                    self.line(format!("item {}:", i + 1));
                    self.nested(|w| {
                        w.attribute(a);
                        w.access(access.as_ref());
                    });
                }
            }
        }
    }

    fn result(&mut self, r: &GetDataResult) {
        match r {
            GetDataResult::Data(d) => {
                self.line("result:      data");
                self.nested(|w| w.data(d, 0));
            }
            GetDataResult::Error(e) => self.line(format!("result:      error {}", access_result(*e))),
        }
    }

    fn get_response(&mut self, r: &GetResponse) {
        match r {
            GetResponse::Normal { invoke, result } => {
                self.line("get-response-normal (1)");
                self.invoke(*invoke);
                self.result(result);
            }
            GetResponse::WithDataBlock { invoke, block } => {
                self.line("get-response-with-datablock (2)");
                self.invoke(*invoke);
                self.block(block);
            }
            GetResponse::WithList { invoke, results } => {
                self.line(format!("get-response-with-list (3), {} results", results.len()));
                self.invoke(*invoke);
                for (i, r) in results.iter().enumerate() {
                    self.line(format!("item {}:", i + 1));
                    self.nested(|w| w.result(r));
                }
            }
        }
    }

    fn block(&mut self, b: &DataBlockG) {
        let last = if b.last_block { "last block" } else { "more blocks follow" };
        self.line(format!("block:       number {}, {last}", b.block_number));
        match &b.result {
            Ok(raw) => {
                self.line(format!("raw data:    {} bytes: {}", raw.len(), hex(raw)));
                // The first block of a long GET usually starts with the whole value's tag and length.
                if b.block_number == 1 {
                    if let Ok((d, used)) = Data::decode(raw) {
                        if used == raw.len() {
                            self.nested(|w| w.data(&d, 0));
                        }
                    }
                }
            }
            Err(e) => self.line(format!("result:      error {}", access_result(*e))),
        }
    }

    fn set_request(&mut self, r: &SetRequest) {
        match r {
            SetRequest::Normal { invoke, attribute, access, value } => {
                self.line("set-request-normal (1)");
                self.invoke(*invoke);
                self.attribute(attribute);
                self.access(access.as_ref());
                self.line("value:");
                self.nested(|w| w.data(value, 0));
            }
            SetRequest::WithFirstDataBlock { invoke, attribute, access, block } => {
                self.line("set-request-with-first-datablock (2)");
                self.invoke(*invoke);
                self.attribute(attribute);
                self.access(access.as_ref());
                self.sa_block(block.block_number, block.last_block, &block.raw);
            }
            SetRequest::WithDataBlock { invoke, block } => {
                self.line("set-request-with-datablock (3)");
                self.invoke(*invoke);
                self.sa_block(block.block_number, block.last_block, &block.raw);
            }
        }
    }

    fn sa_block(&mut self, number: u32, last: bool, raw: &[u8]) {
        let last = if last { "last block" } else { "more blocks follow" };
        self.line(format!("block:       number {number}, {last}"));
        self.line(format!("raw data:    {} bytes: {}", raw.len(), hex(raw)));
    }

    fn set_response(&mut self, r: &SetResponse) {
        match r {
            SetResponse::Normal { invoke, result } => {
                self.line("set-response-normal (1)");
                self.invoke(*invoke);
                self.line(format!("result:      {}", access_result(*result)));
            }
            SetResponse::DataBlock { invoke, block_number } => {
                self.line("set-response-datablock (2)");
                self.invoke(*invoke);
                self.line(format!("block:       {block_number} received, send the next"));
            }
            SetResponse::LastDataBlock { invoke, result, block_number } => {
                self.line("set-response-last-datablock (3)");
                self.invoke(*invoke);
                self.line(format!("result:      {}", access_result(*result)));
                self.line(format!("block:       {block_number}"));
            }
        }
    }

    fn action_request(&mut self, r: &ActionRequest) {
        self.line("action-request-normal (1)");
        self.invoke(r.invoke);
        self.method(&r.method);
        match &r.parameters {
            Some(p) => {
                self.line("parameters:");
                self.nested(|w| w.data(p, 0));
            }
            None => self.line("parameters:  none"),
        }
    }

    fn action_response(&mut self, r: &ActionResponse) {
        self.line("action-response-normal (1)");
        self.invoke(r.invoke);
        self.line(format!("result:      {}", action_result(r.result)));
        if let Some(p) = &r.return_parameters {
            self.line("return parameters:");
            self.nested(|w| w.result(p));
        }
    }

    /// One `Data` value, nested values indented.
    fn data(&mut self, d: &Data, depth: usize) {
        match d {
            Data::Array(items) | Data::Structure(items) => {
                let kind = if matches!(d, Data::Array(_)) { "array" } else { "structure" };
                self.line(format!("{kind} of {} element{}", items.len(), if items.len() == 1 { "" } else { "s" }));
                if depth >= super::axdr::MAX_DEPTH {
                    return;
                }
                self.nested(|w| {
                    for item in items.iter().take(MAX_ELEMENTS) {
                        w.data(item, depth + 1);
                    }
                    if items.len() > MAX_ELEMENTS {
                        w.line(format!("… {} more elements", items.len() - MAX_ELEMENTS));
                    }
                });
            }
            other => self.line(scalar(other)),
        }
    }
}

/// One line for a value that is not an array or structure.
fn scalar(d: &Data) -> String {
    match d {
        Data::Null => "null-data".into(),
        Data::Boolean(b) => format!("boolean {b}"),
        Data::BitString(b) => {
            let bits: String =
                (0..b.len().min(MAX_HEX * 8)).map(|i| if b.bit(i) == Some(true) { '1' } else { '0' }).collect();
            format!("bit-string ({} bits) {bits}", b.len())
        }
        Data::DoubleLong(v) => format!("double-long {v}"),
        Data::DoubleLongUnsigned(v) => format!("double-long-unsigned {v}"),
        Data::OctetString(b) => {
            let mut s = format!("octet-string ({} bytes) {}", b.len(), hex(b));
            if let Ok(ln) = <[u8; 6]>::try_from(b.as_slice()) {
                let _ = write!(s, " = OBIS {}", obis(&ln));
            } else if let Some(dt) = DateTime::from_bytes(b) {
                let _ = write!(s, " = date-time {}", datetime_text(&dt));
            } else if !b.is_empty() && b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
                let _ = write!(s, " = \"{}\"", String::from_utf8_lossy(b));
            }
            s
        }
        Data::VisibleString(b) => format!("visible-string \"{}\"", printable(b)),
        Data::Utf8String(b) => format!("utf8-string \"{}\"", String::from_utf8_lossy(b).escape_debug()),
        Data::Bcd(v) => format!("bcd 0x{v:02X}"),
        Data::Integer(v) => format!("integer {v}"),
        Data::Long(v) => format!("long {v}"),
        Data::Unsigned(v) => format!("unsigned {v}"),
        Data::LongUnsigned(v) => format!("long-unsigned {v}"),
        Data::CompactArray { description, contents } => {
            format!(
                "compact-array: type description {}, contents {} bytes {}",
                hex(description),
                contents.len(),
                hex(contents)
            )
        }
        Data::Long64(v) => format!("long64 {v}"),
        Data::Long64Unsigned(v) => format!("long64-unsigned {v}"),
        Data::Enum(v) => format!("enum {v}"),
        Data::Float32(v) => format!("float32 {v}"),
        Data::Float64(v) => format!("float64 {v}"),
        Data::DateTime(dt) => format!("date-time {}", datetime_text(dt)),
        Data::Date(dt) => {
            let y = if dt.year == YEAR_NOT_SPECIFIED { "????".to_string() } else { format!("{:04}", dt.year) };
            format!("date {y}-{}-{}", two(dt.month), two(dt.day))
        }
        Data::Time(t) => format!("time {}:{}:{}", two(t.hour), two(t.minute), two(t.second)),
        Data::Array(_) | Data::Structure(_) => "structure".into(),
    }
}

/// Two digits, or `??` for "not specified" (0xFF) and out-of-range wildcards.
fn two(v: u8) -> String {
    if v == 0xFF {
        "??".into()
    } else {
        format!("{v:02}")
    }
}

/// ISO 8601 for a COSEM date-time: `2026-11-24T09:00:00+01:00` (`UTC = local + deviation`, so the offset
/// is the negated deviation), `?` for fields not specified, then the raw deviation and the clock status.
fn datetime_text(dt: &DateTime) -> String {
    let d = dt.date;
    let t = dt.time;
    let year = if d.year == YEAR_NOT_SPECIFIED { "????".to_string() } else { format!("{:04}", d.year) };
    let month = match d.month {
        0xFD => "DST-end".to_string(),
        0xFE => "DST-begin".to_string(),
        m => two(m),
    };
    let day = match d.day {
        0xFD => "second-last".to_string(),
        0xFE => "last".to_string(),
        v => two(v),
    };
    let mut s = format!("{year}-{month}-{day}T{}:{}:{}", two(t.hour), two(t.minute), two(t.second));
    if t.hundredths != 0xFF && t.hundredths != 0 {
        let _ = write!(s, ".{:02}", t.hundredths);
    }
    if dt.deviation == DEVIATION_NOT_SPECIFIED {
        s.push_str(" (deviation not specified)");
    } else {
        let offset = -i32::from(dt.deviation);
        let sign = if offset < 0 { '-' } else { '+' };
        let _ = write!(s, "{sign}{:02}:{:02} (deviation {} min)", offset.abs() / 60, offset.abs() % 60, dt.deviation);
    }
    if dt.clock_status != 0xFF && dt.clock_status != 0 {
        let mut flags = Vec::new();
        for (bit, name) in [
            (0x01, "invalid"),
            (0x02, "doubtful"),
            (0x04, "different base"),
            (0x08, "invalid status"),
            (0x80, "DST active"),
        ] {
            if dt.clock_status & bit != 0 {
                flags.push(name);
            }
        }
        let _ = write!(s, ", clock status 0x{:02X} ({})", dt.clock_status, flags.join(", "));
    }
    s
}

fn printable(b: &[u8]) -> String {
    b.iter().map(|&c| if c.is_ascii_graphic() || c == b' ' { char::from(c) } else { '.' }).collect()
}

fn obis(ln: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = *ln;
    format!("{a}-{b}:{c}.{d}.{e}*{f}")
}

/// A system title: hex, and the FLAG manufacturer code when the first three bytes are letters.
fn system_title_text(st: &[u8]) -> String {
    let mut s = format!("{} ({} bytes)", hex(st), st.len());
    if let Some(m) = st.get(..3).filter(|m| m.iter().all(u8::is_ascii_alphabetic)) {
        let _ = write!(s, ", manufacturer {}", String::from_utf8_lossy(m));
    }
    s
}

fn pdu_size(v: u16) -> String {
    if v == 0 {
        "0 (no limit)".into()
    } else {
        v.to_string()
    }
}

fn context_name(c: ApplicationContext) -> String {
    match c {
        ApplicationContext::LogicalName => "logical name referencing, no ciphering (2.16.756.5.8.1.1)".into(),
        ApplicationContext::LogicalNameCiphered => "logical name referencing with ciphering (2.16.756.5.8.1.3)".into(),
        ApplicationContext::Other(2) => "short name referencing, no ciphering (2.16.756.5.8.1.2)".into(),
        ApplicationContext::Other(4) => "short name referencing with ciphering (2.16.756.5.8.1.4)".into(),
        ApplicationContext::Other(v) => format!("unknown (2.16.756.5.8.1.{v})"),
    }
}

fn mechanism_name(m: Mechanism) -> String {
    match m {
        Mechanism::None => "lowest level security, no authentication (2.16.756.5.8.2.0)".into(),
        Mechanism::Lls => "low level security, password (2.16.756.5.8.2.1)".into(),
        Mechanism::HlsGmac => "high level security, GMAC (2.16.756.5.8.2.5)".into(),
        Mechanism::Other(v) => {
            let name = match v {
                2 => "high level security, manufacturer specific",
                3 => "high level security, MD5",
                4 => "high level security, SHA-1",
                6 => "high level security, SHA-256",
                7 => "high level security, ECDSA",
                _ => "unknown",
            };
            format!("{name} (2.16.756.5.8.2.{v})")
        }
    }
}

/// Conformance bits by their Green Book number and name.
const CONFORMANCE_BITS: [(u32, &str); 21] = [
    (1, "general-protection"),
    (2, "general-block-transfer"),
    (3, "read"),
    (4, "write"),
    (5, "unconfirmed-write"),
    (8, "attribute0-supported-with-set"),
    (9, "priority-mgmt-supported"),
    (10, "attribute0-supported-with-get"),
    (11, "block-transfer-with-get-or-read"),
    (12, "block-transfer-with-set-or-write"),
    (13, "block-transfer-with-action"),
    (14, "multiple-references"),
    (15, "information-report"),
    (16, "data-notification"),
    (17, "access"),
    (18, "parameterized-access"),
    (19, "get"),
    (20, "set"),
    (21, "selective-access"),
    (22, "event-notification"),
    (23, "action"),
];

/// Interface class name for the printout.
fn class_name(class_id: u16) -> &'static str {
    super::cosem::class_name(class_id).unwrap_or("unknown class")
}

/// `N (name)` for the attributes of the classes a meter reading touches.
fn attribute_text(class_id: u16, attribute: i8) -> String {
    let name = match (class_id, attribute) {
        (_, 1) => "logical_name",
        (1 | 3 | 4, 2) => "value",
        (3 | 4, 3) => "scaler_unit",
        (4, 4) => "status",
        (4, 5) => "capture_time",
        (5, 2) => "current_average_value",
        (5, 3) => "last_average_value",
        (5, 4) => "scaler_unit",
        (5, 5) => "status",
        (5, 6) => "capture_time",
        (5, 7) => "start_time_current",
        (5, 8) => "period",
        (5, 9) => "number_of_periods",
        (7, 2) => "buffer",
        (7, 3) => "capture_objects",
        (7, 4) => "capture_period",
        (7, 5) => "sort_method",
        (7, 6) => "sort_object",
        (7, 7) => "entries_in_use",
        (7, 8) => "profile_entries",
        (8, 2) => "time",
        (8, 3) => "time_zone",
        (8, 4) => "status",
        (8, 5) => "daylight_savings_begin",
        (8, 6) => "daylight_savings_end",
        (8, 7) => "daylight_savings_deviation",
        (8, 8) => "daylight_savings_enabled",
        (8, 9) => "clock_base",
        (15, 2) => "object_list",
        (15, 3) => "associated_partners_id",
        (15, 4) => "application_context_name",
        (15, 5) => "xDLMS_context_info",
        (15, 6) => "authentication_mechanism_name",
        (15, 7) => "secret",
        (15, 8) => "association_status",
        (70, 2) => "output_state",
        (70, 3) => "control_state",
        (70, 4) => "control_mode",
        (_, a) if a < 0 => "manufacturer specific",
        _ => "",
    };
    if name.is_empty() {
        attribute.to_string()
    } else {
        format!("{attribute} ({name})")
    }
}

fn method_text(class_id: u16, method: i8) -> String {
    let name = match (class_id, method) {
        (3..=5, 1) => "reset",
        (5, 2) => "next_period",
        (7, 1) => "reset",
        (7, 2) => "capture",
        (8, 1) => "adjust_to_quarter",
        (8, 2) => "adjust_to_measuring_period",
        (8, 3) => "adjust_to_minute",
        (8, 4) => "adjust_to_preset_time",
        (8, 5) => "preset_adjusting_time",
        (8, 6) => "shift_time",
        (9, 1) => "execute",
        (15, 1) => "reply_to_HLS_authentication",
        (15, 2) => "change_HLS_secret",
        (70, 1) => "remote_disconnect",
        (70, 2) => "remote_reconnect",
        _ => "",
    };
    if name.is_empty() {
        method.to_string()
    } else {
        format!("{method} ({name})")
    }
}

fn access_result(r: DataAccessResult) -> String {
    let name = match r {
        DataAccessResult::Success => "success",
        DataAccessResult::HardwareFault => "hardware-fault",
        DataAccessResult::TemporaryFailure => "temporary-failure",
        DataAccessResult::ReadWriteDenied => "read-write-denied",
        DataAccessResult::ObjectUndefined => "object-undefined",
        DataAccessResult::ObjectClassInconsistent => "object-class-inconsistent",
        DataAccessResult::ObjectUnavailable => "object-unavailable",
        DataAccessResult::TypeUnmatched => "type-unmatched",
        DataAccessResult::ScopeOfAccessViolated => "scope-of-access-violated",
        DataAccessResult::DataBlockUnavailable => "data-block-unavailable",
        DataAccessResult::LongGetAborted => "long-get-aborted",
        DataAccessResult::NoLongGetInProgress => "no-long-get-in-progress",
        DataAccessResult::LongSetAborted => "long-set-aborted",
        DataAccessResult::NoLongSetInProgress => "no-long-set-in-progress",
        DataAccessResult::DataBlockNumberInvalid => "data-block-number-invalid",
        DataAccessResult::OtherReason => "other-reason",
        DataAccessResult::Other(_) => "unknown",
    };
    format!("{name} ({})", r.to_u8())
}

fn action_result(r: u8) -> String {
    let name = match r {
        0 => "success",
        1 => "hardware-fault",
        2 => "temporary-failure",
        3 => "read-write-denied",
        4 => "object-undefined",
        9 => "object-class-inconsistent",
        11 => "object-unavailable",
        12 => "type-unmatched",
        13 => "scope-of-access-violated",
        14 => "data-block-unavailable",
        15 => "long-action-aborted",
        16 => "no-long-action-in-progress",
        250 => "other-reason",
        _ => "unknown",
    };
    format!("{name} ({r})")
}

fn service_name(s: u8) -> &'static str {
    match s {
        1 => "initiateError",
        2 => "getStatus",
        3 => "getNameList",
        4 => "getVariableAttribute",
        5 => "read",
        6 => "write",
        7 => "getDataSetAttribute",
        8 => "getTIAttribute",
        9 => "changeScope",
        10 => "start",
        11 => "stop",
        12 => "resume",
        13 => "makeUsable",
        14 => "initiateLoad",
        15 => "loadSegment",
        16 => "terminateLoad",
        17 => "initiateUpLoad",
        18 => "upLoadSegment",
        19 => "terminateUpLoad",
        _ => "unknown",
    }
}

fn error_class_name(c: u8) -> &'static str {
    match c {
        0 => "application-reference",
        1 => "hardware-resource",
        2 => "vde-state-error",
        3 => "service",
        4 => "definition",
        5 => "access",
        6 => "initiate",
        7 => "load-data-set",
        8 => "change-scope",
        9 => "task",
        10 => "other",
        _ => "unknown",
    }
}

/// Hint for a wrapper frame's direction: the wPort of a client is usually small (16 public client, 1
/// management), the server's logical device 1.
fn port_hint(source: u16, destination: u16) -> &'static str {
    match (source, destination) {
        (0x10, _) => " (public client)",
        (_, 0x10) => " (server logical device, to the public client)",
        _ => "",
    }
}

/// Like [`hex`], with every occurrence of a secret shown as `**` per byte.
fn hex_masked(b: &[u8], secrets: &[Vec<u8>]) -> String {
    let mut masked = vec![false; b.len()];
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let mut i = 0;
        while let Some(w) = b.get(i..i + secret.len()) {
            if w == secret.as_slice() {
                masked.iter_mut().skip(i).take(secret.len()).for_each(|m| *m = true);
            }
            i += 1;
        }
    }
    let mut s: String = b
        .iter()
        .zip(&masked)
        .take(MAX_HEX)
        .map(|(x, m)| if *m { "**".to_string() } else { format!("{x:02X}") })
        .collect::<Vec<_>>()
        .join(" ");
    if b.len() > MAX_HEX {
        let _ = write!(s, " … ({} bytes in all)", b.len());
    }
    s
}

/// Masks the hex of each secret in already written text (for the dumps inside a bare APDU's description).
fn mask_text(text: &str, secrets: &[Vec<u8>]) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let stars = vec!["**"; secret.len()].join(" ");
        text = text.replace(&hex(secret), &stars);
    }
    text
}

/// Bytes as spaced hex, cut after [`MAX_HEX`] bytes.
fn hex(b: &[u8]) -> String {
    let mut s: String = b.iter().take(MAX_HEX).map(|x| format!("{x:02X}")).collect::<Vec<_>>().join(" ");
    if b.len() > MAX_HEX {
        let _ = write!(s, " … ({} bytes in all)", b.len());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> Vec<u8> {
        s.split_whitespace().map(|t| u8::from_str_radix(t, 16).unwrap()).collect()
    }

    fn has(text: &str, needle: &str) {
        assert!(text.contains(needle), "{needle:?} missing in:\n{text}");
    }

    // Frames from the Gurux Python client (gurux-dlms 1.0.203), an independent encoder: public client 16,
    // server address 1, no authentication.
    const SNRM: &str = "7E A0 07 03 21 93 0F 01 7E";
    const AARQ: &str = "7E A0 2B 03 21 10 FB AF E6 E6 00 60 1D A1 09 06 07 60 85 74 05 08 01 01 BE 10 04 0E 01 00 00 00 06 5F 1F 04 00 40 1E 5D FF FF 91 23 7E";
    const GET: &str = "7E A0 19 03 21 32 6F D8 E6 E6 00 C0 01 C1 00 03 01 00 01 08 00 FF 02 00 32 68 7E";
    /// Client 32, server logical 1 physical 17 (2-byte address), LLS with password "12345678".
    const AARQ_LLS: &str = "7E A0 45 02 23 41 10 2D 0A E6 E6 00 60 36 A1 09 06 07 60 85 74 05 08 01 01 8A 02 07 80 8B 07 60 85 74 05 08 02 01 AC 0A 80 08 31 32 33 34 35 36 37 38 BE 10 04 0E 01 00 00 00 06 5F 1F 04 00 40 1E 5D FF FF 8B 3C 7E";
    const ACTION_WRAPPED: &str = "00 01 00 10 00 01 00 0F C3 01 C1 00 46 00 00 60 03 0A FF 01 01 0F 00";
    const GET_RANGE_WRAPPED: &str = "00 01 00 10 00 01 00 40 C0 01 C1 00 07 01 00 63 01 00 FF 02 01 01 02 04 02 04 12 00 08 09 06 00 00 01 00 00 FF 0F 02 12 00 00 09 0C 07 EA 0B 18 FF 00 00 00 00 00 00 00 09 0C 07 EA 0B 18 FF 01 00 00 00 00 00 00 01 00";

    #[test]
    fn snrm_shows_addresses_and_control() {
        let text = describe(&bytes(SNRM));
        has(&text, "HDLC frame 1 (bytes 0..9)");
        has(&text, "format:      type 3, length 7");
        has(&text, "destination: server upper 1 (management logical device) (1 byte)");
        has(&text, "source:      client SAP 16 (public client)");
        has(&text, "control:     SNRM (P=1) (0x93)");
        has(&text, "checks:      FCS ok");
    }

    #[test]
    fn aarq_in_an_i_frame() {
        let text = describe(&bytes(AARQ));
        has(&text, "control:     I(N(S)=0, N(R)=0, P=1) (0x10)");
        has(&text, "HCS/FCS ok");
        has(&text, "LLC:         E6 E6 00 (client → server)");
        has(&text, "APDU: AARQ (96, 0x60)");
        has(&text, "application context: logical name referencing, no ciphering (2.16.756.5.8.1.1)");
        has(&text, "mechanism:           none given (lowest level security)");
        has(&text, "APDU: InitiateRequest (1, 0x01)");
        has(&text, "DLMS version:         6");
        has(&text, "proposed conformance: 0x401E5D");
        has(&text, "block-transfer-with-get-or-read");
        // The same bits Gurux's translator names for 0x401E5D.
        has(&text, "selective-access, action");
        has(&text, "client max PDU size:  65535");
    }

    #[test]
    fn lls_password_is_never_shown() {
        let text = describe(&bytes(AARQ_LLS));
        has(&text, "destination: server upper 1 (management logical device), lower 17 (2 bytes)");
        has(&text, "source:      client SAP 32");
        has(&text, "mechanism:           low level security, password (2.16.756.5.8.2.1)");
        has(&text, "LLS password, 8 bytes (not shown)");
        assert!(!text.contains("12345678") && !text.contains("31 32 33 34"), "password leaked:\n{text}");
        has(&text, "** ** ** ** ** ** ** **");
        // The bare APDU (after the LLC) and a wrapper frame carrying it mask it the same way.
        let frame = bytes(AARQ_LLS);
        let apdu = &frame[12..frame.len() - 3];
        for input in [apdu.to_vec(), ami_link::wrapper::encode(0x20, 1, apdu).unwrap()] {
            let text = describe(&input);
            has(&text, "LLS password, 8 bytes (not shown)");
            assert!(!text.contains("31 32 33 34"), "password leaked:\n{text}");
        }
    }

    #[test]
    fn get_request_names_the_object() {
        let text = describe(&bytes(GET));
        has(&text, "control:     I(N(S)=1, N(R)=1, P=1) (0x32)");
        has(&text, "APDU: GET.request (192, 0xC0)");
        has(&text, "get-request-normal (1)");
        has(&text, "invoke id:   1 (confirmed, high priority; 0xC1)");
        has(&text, "attribute:   class 3 (Register), 1-0:1.8.0*255, attribute 2 (value)");
    }

    #[test]
    fn wrapper_action_and_selective_access() {
        let text = describe(&bytes(ACTION_WRAPPED));
        has(&text, "wrapper frame 1 (bytes 0..23)");
        has(&text, "source:      wPort 16 (public client)");
        has(&text, "destination: wPort 1");
        has(&text, "method:      class 70 (Disconnect control), 0-0:96.3.10*255, method 1 (remote_disconnect)");
        has(&text, "integer 0");

        let text = describe(&bytes(GET_RANGE_WRAPPED));
        has(&text, "attribute:   class 7 (Profile generic), 1-0:99.1.0*255, attribute 2 (buffer)");
        has(&text, "selective access: range_descriptor (by range) (1)");
        has(&text, "octet-string (6 bytes) 00 00 01 00 00 FF = OBIS 0-0:1.0.0*255");
        has(&text, "= date-time 2026-11-24T00:00:00+00:00 (deviation 0 min)");
        has(&text, "= date-time 2026-11-24T01:00:00+00:00");
    }

    #[test]
    fn several_frames_and_a_bad_fcs() {
        let mut input = bytes(SNRM);
        let mut get = bytes(GET);
        let n = get.len();
        get[n - 2] ^= 0xFF; // break the FCS
        input.extend_from_slice(&get);
        let text = describe(&input);
        has(&text, "HDLC frame 1 (bytes 0..9)");
        has(&text, "HDLC frame 2 (bytes 9..36)");
        has(&text, "checks:      BAD: FCS expected 0x6832");
        // The fields of the damaged frame are still explained.
        has(&text, "1-0:1.8.0*255");
    }

    #[test]
    fn ua_parameters_and_responses() {
        // UA with the HDLC parameters of the Green Book example, encoded by our frame encoder.
        let ua = Frame {
            segmented: false,
            dest: Address::client(0x10),
            src: Address::server(1, Some(17)),
            control: Control::UA { poll: true },
            info: bytes("81 80 12 05 01 80 06 01 80 07 04 00 00 00 01 08 04 00 00 00 07"),
        };
        let text = describe(&ua.encode().unwrap());
        has(&text, "destination: client SAP 16 (public client)");
        has(&text, "source:      server upper 1 (management logical device), lower 17 (2 bytes)");
        has(&text, "control:     UA (F=1) (0x73)");
        has(&text, "max information field length, transmit (0x05): 128");
        has(&text, "window size, receive (0x08): 7");

        // AARE accepted, with an InitiateResponse (Green Book example).
        let aare = "61 29 A1 09 06 07 60 85 74 05 08 01 01 A2 03 02 01 00 A3 05 A1 03 02 01 00 BE 10 04 0E 08 00 06 5F 1F 04 00 00 10 1D 01 F4 00 07";
        let text = describe(&bytes(aare));
        has(&text, "APDU: AARE (97, 0x61)");
        has(&text, "result:              accepted (0)");
        has(&text, "diagnostic:          acse-service-user null (0)");
        has(&text, "APDU: InitiateResponse (8, 0x08)");
        has(&text, "server max PDU size:  500");
        // Gurux's translator names the same negotiated bits for 0x00101D.
        has(&text, "block-transfer-with-get-or-read, get, set, selective-access");
        has(&text, "VAA name:             0x0007 (logical name referencing)");

        // GET.response with a value, one with an error, and a date-time.
        has(&describe(&bytes("C4 01 C1 00 06 00 00 30 39")), "double-long-unsigned 12345");
        has(&describe(&bytes("C4 01 C1 01 04")), "result:      error object-undefined (4)");
        let clock = "C4 01 C1 00 09 0C 07 EA 0B 18 02 09 00 00 00 FF C4 00";
        has(&describe(&bytes(clock)), "date-time 2026-11-24T09:00:00+01:00 (deviation -60 min)");
    }

    #[test]
    fn ciphered_envelopes_are_not_decrypted() {
        // glo-get-request: SC 0x30 (authenticated and encrypted), IC 1, 5 bytes of payload.
        let text = describe(&bytes("C8 0A 30 00 00 00 01 AA BB CC DD EE"));
        has(&text, "APDU: glo-get-request (200, 0xC8)");
        has(&text, "security control:   0x30 (authenticated, encrypted, security suite 0)");
        has(&text, "invocation counter: 1");
        has(&text, "payload:            5 bytes including the 12-byte authentication tag (not decrypted here)");
    }

    #[test]
    fn segmented_frames_are_reassembled() {
        // A GET.response split over two I-frames (server → client).
        let apdu = bytes("C4 01 C1 00 09 0C 07 EA 0B 18 02 09 00 00 00 FF C4 00");
        let (first, second) = apdu.split_at(8);
        let mut info = vec![0xE6, 0xE7, 0x00];
        info.extend_from_slice(first);
        let f1 = Frame {
            segmented: true,
            dest: Address::client(0x10),
            src: Address::server(1, None),
            control: Control::I { send_seq: 0, recv_seq: 1, poll: false },
            info,
        };
        let f2 = Frame {
            segmented: false,
            control: Control::I { send_seq: 1, recv_seq: 1, poll: true },
            info: second.to_vec(),
            ..f1.clone()
        };
        let mut input = f1.encode().unwrap();
        input.extend_from_slice(&f2.encode().unwrap());
        let text = describe(&input);
        has(&text, "segmented (more segments follow)");
        has(&text, "8 bytes of a segmented APDU");
        has(&text, "last segment; reassembled APDU of 18 bytes");
        has(&text, "date-time 2026-11-24T09:00:00+01:00");
    }

    #[test]
    fn garbage_is_explained_not_fatal() {
        has(&describe(&[]), "empty input");
        has(&describe(&bytes("7E A0 19 03")), "truncated HDLC frame at byte 0");
        has(&describe(&bytes("00 01 00 10 00 01 00 40 C0")), "truncated wrapper frame");
        has(&describe(&bytes("FF FF")), "APDU: not decoded");
    }

    /// A data-notification pushed by a Kaifa MA304 on its HAN port (published on the Gurux forum, node
    /// 23817): no client address, a 2-byte source, and a date-time sent with a stray octet-string tag.
    const KAIFA_PUSH: &str = "7e a0 9a 01 00 01 10 12 10 e6 e7 00 0f 40 00 00 00 09 0c 07 e7 0a 14 05 12 3a 0f ff ff c4 00 02 12 09 07 4b 46 4d 5f 30 30 31 09 10 37 33 34 30 31 35 37 30 33 30 39 30 34 30 34 35 09 07 4d 41 33 30 34 48 34 06 00 00 01 a9 06 00 00 00 00 06 00 00 00 00 06 00 00 00 04 06 00 00 00 61 06 00 00 01 ac 06 00 00 05 c4 06 00 00 08 fa 06 00 00 08 fe 06 00 00 09 0f 09 0c 07 e7 0a 14 05 12 3a 0f ff ff c4 00 06 00 07 4b b5 06 00 00 00 00 06 00 00 64 3c 06 00 02 6e f6 4b 0b 7e";

    #[test]
    fn a_captured_push_frame_is_framed_and_named() {
        let text = describe(&bytes(KAIFA_PUSH));
        has(&text, "HDLC frame 1 (bytes 0..156)");
        has(&text, "checks:      HCS/FCS ok");
        has(&text, "LLC:         E6 E7 00 (server → client)");
        has(&text, "control:     I(N(S)=0, N(R)=0, P=1) (0x10)");
        has(&text, "APDU: data-notification (15, 0x0F)");
        has(&text, "date-time:      2023-10-20T18:58:15+01:00 (deviation -60 min) (sent with a stray");
        has(&text, "octet-string (7 bytes) 4B 46 4D 5F 30 30 31 = \"KFM_001\"");
        has(&text, "double-long-unsigned 425");
    }

    #[test]
    #[ignore = "prints the descriptions of the test vectors"]
    fn show() {
        for v in [SNRM, AARQ, GET, AARQ_LLS, ACTION_WRAPPED, GET_RANGE_WRAPPED, KAIFA_PUSH] {
            println!("{}", describe(&bytes(v)));
        }
    }

    #[test]
    fn random_input_never_panics() {
        // xorshift64*, fixed seed; mutations of real frames plus plain random bytes.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let seeds: Vec<Vec<u8>> =
            [SNRM, AARQ, GET, AARQ_LLS, ACTION_WRAPPED, GET_RANGE_WRAPPED].iter().map(|s| bytes(s)).collect();
        for i in 0..20_000 {
            let mut d = if i % 4 == 0 {
                let len = (next() % 300) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut d = seeds[(next() % seeds.len() as u64) as usize].clone();
                for _ in 0..=(next() % 4) {
                    if d.is_empty() {
                        break;
                    }
                    let at = (next() % d.len() as u64) as usize;
                    match next() % 3 {
                        0 => d[at] = next() as u8,
                        1 => {
                            d.truncate(at);
                        }
                        _ => d.insert(at, next() as u8),
                    }
                }
                d
            };
            if i % 7 == 0 {
                let copy = d.clone();
                d.extend_from_slice(&copy);
            }
            let text = describe(&d);
            assert!(!text.is_empty());
            assert!(
                text.len() < 64 * 1024 + 200 * d.len(),
                "output of {} bytes for {} input bytes",
                text.len(),
                d.len()
            );
        }
    }
}
