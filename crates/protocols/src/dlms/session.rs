//! The async DLMS session: one client association with one meter, driven over an `ami_link::BusHandle`.
//!
//! This is the only part of the DLMS stack that does I/O, and all of it goes through the bus: each request
//! frame is one `Exchange` (with this session's reply matcher, timeout and retries), so other meters on a
//! multi-drop line get their turn between two frames of this session. The protocol decisions are made by
//! the sans-IO state machines it pumps (house style 11): [`ami_link::hdlc_session::HdlcClient`] (IEC
//! 62056-46, frames, segmentation, RR), the TCP wrapper ([`ami_link::wrapper`], IEC 62056-47), the IEC
//! 62056-21 mode E opening ([`ami_link::mode_e`]) and [`super::client::Association`] (AARQ/AARE, HLS,
//! GET/SET/ACTION, ciphering).
//!
//! On top it reads the classes a concentrator needs with meaning ([`super::cosem`]): registers scaled by
//! their `scaler_unit` (cached per session, i.e. per association), the clock, load profiles by time range
//! (capture objects and capture period read once per session), and the disconnect control.
//!
//! HDLC windows: the bus carries one reply frame per request, so the session always proposes a receive
//! window of 1 (whatever [`Framing::Hdlc::params`] says): the meter then polls for every segment.
//!
//! Panic contract: nothing a meter sends panics the session; every failure is a [`DlmsError`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ami_link::hdlc::{Address, Frame};
use ami_link::hdlc_session::{Action, HdlcClient, HdlcMatcher, HdlcParameters};
use ami_link::{mode_e, wrapper, BusHandle, Exchange, ReplyMatcher};
use ami_media::{Parity, SerialSettings};

use super::apdu::{AttributeDescriptor, Conformance, GetDataResult, LogicalName, MethodDescriptor, SelectiveAccess};
use super::axdr::Data;
use super::client::{Association, ClientSettings, DlmsError, InvocationCounter, Outcome, Pending, Progress};
use super::cosem::{
    self, profile_attribute, CaptureObject, ProfileRow, ScalerUnit, CLASS_DATA, CLASS_PROFILE_GENERIC, CLOCK_COLUMN,
    CLOCK_TIME,
};

/// How APDUs reach the meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// HDLC (IEC 62056-46), on a serial line or over TCP.
    Hdlc {
        /// Client SAP (1 byte): `0x10` public client, `0x20`/`0x30`/… management clients.
        client: u8,
        /// Upper HDLC address: the logical device (1 = management logical device).
        server_logical: u16,
        /// Lower HDLC address: the physical device (often derived from the serial number); `None` sends a
        /// 1-byte server address.
        server_physical: Option<u16>,
        /// Proposed link parameters (max information field sizes; the receive window is forced to 1).
        params: HdlcParameters,
    },
    /// The TCP/UDP wrapper (IEC 62056-47), 8-byte header with wPorts.
    Wrapper {
        /// Client wPort (usually the client SAP, e.g. 0x10).
        client: u16,
        /// Server wPort (the logical device, usually 1).
        server: u16,
    },
}

/// Everything needed to open a session with one meter.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Meter id (bus counters and logs).
    pub meter: String,
    /// HDLC or wrapper.
    pub framing: Framing,
    /// Open with the IEC 62056-21 mode E sign-on first (optical probes: 300 baud 7E1 sign-on, then the
    /// meter's baud rate 8N1 and HDLC). Serial HDLC only.
    pub optical_mode_e: bool,
    /// Association settings (authentication, ciphering, PDU size, conformance).
    pub settings: ClientSettings,
    /// Per-frame reply timeout.
    pub timeout: Duration,
    /// Retries of a frame after the first attempt (the same bytes again).
    pub retries: u32,
}

/// A load profile read by time range.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The capture objects (columns), in buffer order.
    pub columns: Vec<CaptureObject>,
    /// The capture period in seconds (`None` when the meter says 0: not periodic).
    pub period_s: Option<u32>,
    /// The entries the meter returned for the range, with their times (see [`cosem::profile_rows`]).
    pub rows: Vec<ProfileRow>,
}

/// The link below the association.
#[derive(Debug)]
enum Link {
    Hdlc(HdlcClient),
    Wrapper { client: u16, server: u16 },
}

/// One open association with one meter (see the module doc).
pub struct Session {
    bus: BusHandle,
    meter: String,
    timeout: Duration,
    retries: u32,
    link: Link,
    association: Association,
    scalers: HashMap<(LogicalName, u16), ScalerUnit>,
    profiles: HashMap<LogicalName, (Vec<CaptureObject>, Option<u32>)>,
    /// The meter's clock deviation (from its own date-times), once known: range bounds are sent in the
    /// meter's local time.
    deviation: Option<Option<i16>>,
    /// Set when an HDLC exchange failed half-way: sequence numbers are no longer in step with the meter.
    broken: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("meter", &self.meter)
            .field("bus", &self.bus.id())
            .field("link", &self.link)
            .field("association", &self.association)
            .finish_non_exhaustive()
    }
}

/// Consecutive [`Action::Ignore`]s (duplicate frames) tolerated before the exchange counts as failed.
const MAX_IGNORED: u32 = 4;

impl Session {
    /// Opens the session: (mode E sign-on,) SNRM/UA for HDLC, AARQ/AARE, and for HLS-GMAC passes 3 and 4.
    /// When the association fails after the HDLC link is up, the link is released (DISC) before the
    /// error is returned.
    pub async fn open(
        bus: &BusHandle,
        config: SessionConfig,
        counter: Arc<dyn InvocationCounter>,
    ) -> Result<Session, DlmsError> {
        let link = match config.framing {
            Framing::Hdlc { client, server_logical, server_physical, mut params } => {
                params.window_rx = 1;
                Link::Hdlc(HdlcClient::new(
                    Address::client(client),
                    Address::server(server_logical, server_physical),
                    params,
                ))
            }
            Framing::Wrapper { client, server } => {
                if config.optical_mode_e {
                    return Err(DlmsError::Config("mode E opening is for HDLC on a serial line"));
                }
                Link::Wrapper { client, server }
            }
        };
        let mut session = Session {
            bus: bus.clone(),
            meter: config.meter,
            timeout: config.timeout,
            retries: config.retries,
            link,
            association: Association::new(config.settings, counter),
            scalers: HashMap::new(),
            profiles: HashMap::new(),
            deviation: None,
            broken: false,
        };
        if config.optical_mode_e {
            session.mode_e().await?;
        }
        session.connect_link().await?;
        match session.associate().await {
            Ok(()) => Ok(session),
            Err(e) => {
                session.disconnect_link().await;
                Err(e)
            }
        }
    }

    /// IEC 62056-21 mode E: sign-on at 300 baud 7E1, identification, acknowledgement selecting HDLC at the
    /// meter's baud rate, then the line switches to that rate 8N1.
    async fn mode_e(&mut self) -> Result<(), DlmsError> {
        let sign_on_line = SerialSettings { baud: 300, parity: Parity::Even, data_bits: 7, stop_bits: 1 };
        // The identification takes ~0.1 s per 3 characters at 300 baud: allow at least 2 s for it.
        let sign_on = Exchange::new(&self.meter, mode_e::sign_on(None), Some(Box::new(mode_e::IdentificationMatcher)))
            .with_timeout(self.timeout.max(Duration::from_secs(2)))
            .with_retries(self.retries);
        let reply = self.bus.transact_with_line(sign_on, Some(sign_on_line), None).await?;
        let id = mode_e::parse_identification(&reply.frame).map_err(|e| DlmsError::Hdlc(format!("mode E: {e}")))?;
        let baud = mode_e::baud_rate(id.baud_char).ok_or_else(|| {
            DlmsError::Hdlc(format!("mode E: identification {} offers no mode E baud rate", id.ident))
        })?;
        if !id.mode_e {
            tracing::warn!(meter = %self.meter, ident = %id.ident, "identification without \\2 (mode E); trying HDLC anyway");
        }
        let hdlc_line = SerialSettings { baud, parity: Parity::None, data_bits: 8, stop_bits: 1 };
        let ack = Exchange::new(&self.meter, mode_e::ack_hdlc(id.baud_char), None);
        self.bus.transact_with_line(ack, None, Some(hdlc_line)).await?;
        tracing::debug!(meter = %self.meter, manufacturer = %id.manufacturer, ident = %id.ident, baud, "mode E: HDLC");
        Ok(())
    }

    /// SNRM/UA (HDLC); nothing for the wrapper.
    async fn connect_link(&mut self) -> Result<(), DlmsError> {
        let Link::Hdlc(hdlc) = &mut self.link else {
            return Ok(());
        };
        let snrm = hdlc.snrm();
        let matcher = hdlc.matcher();
        let reply = self.exchange(snrm, matcher, self.retries).await?;
        let Link::Hdlc(hdlc) = &mut self.link else {
            return Ok(());
        };
        let frame = decode_frame(&reply)?;
        let negotiated = hdlc.on_ua(&frame).map_err(|e| DlmsError::Hdlc(e.to_string()))?;
        tracing::debug!(meter = %self.meter, ?negotiated, "HDLC link up");
        Ok(())
    }

    /// AARQ/AARE and the HLS passes.
    async fn associate(&mut self) -> Result<(), DlmsError> {
        let aarq = self.association.aarq()?;
        let aare = self.transfer(&aarq).await?;
        if let Some(pass3) = self.association.on_aare(&aare)? {
            let reply = self.transfer(&pass3).await?;
            self.association.on_hls_reply(&reply)?;
        }
        tracing::debug!(meter = %self.meter, negotiated = ?self.association.negotiated(), "DLMS association established");
        Ok(())
    }

    /// DISC (HDLC), best effort: one attempt, the answer (UA or DM) is not required.
    async fn disconnect_link(&mut self) {
        let Link::Hdlc(hdlc) = &mut self.link else {
            return;
        };
        let disc = hdlc.disc();
        let matcher = Box::new(HdlcMatcher { client: hdlc.client(), server: hdlc.server() });
        if let Err(e) = self.exchange(disc, matcher, 0).await {
            tracing::debug!(meter = %self.meter, error = %e, "no answer to DISC");
        }
    }

    /// One bus exchange with this session's timeout.
    async fn exchange(
        &self,
        request: Vec<u8>,
        matcher: Box<dyn ReplyMatcher>,
        retries: u32,
    ) -> Result<Vec<u8>, DlmsError> {
        let exchange =
            Exchange::new(&self.meter, request, Some(matcher)).with_timeout(self.timeout).with_retries(retries);
        Ok(self.bus.transact(exchange).await?.frame)
    }

    /// Sends one APDU and returns the reply APDU (HDLC: all segments both ways; wrapper: one frame).
    async fn transfer(&mut self, apdu: &[u8]) -> Result<Vec<u8>, DlmsError> {
        if self.broken {
            return Err(DlmsError::State(
                "the HDLC link failed during an earlier exchange; close and reopen the session",
            ));
        }
        let result = self.transfer_once(apdu).await;
        if matches!(self.link, Link::Hdlc(_)) && matches!(result, Err(DlmsError::Link(_) | DlmsError::Hdlc(_))) {
            self.broken = true;
        }
        result
    }

    async fn transfer_once(&mut self, apdu: &[u8]) -> Result<Vec<u8>, DlmsError> {
        match &mut self.link {
            Link::Wrapper { client, server } => {
                let (client, server) = (*client, *server);
                let frame = wrapper::encode(client, server, apdu).map_err(|e| DlmsError::Hdlc(e.to_string()))?;
                let reply =
                    self.exchange(frame, Box::new(wrapper::WrapperMatcher { client, server }), self.retries).await?;
                match wrapper::decode(&reply) {
                    Ok(Some((_, apdu, _))) => Ok(apdu),
                    Ok(None) => Err(DlmsError::Hdlc("incomplete wrapper frame".into())),
                    Err(e) => Err(DlmsError::Hdlc(e.to_string())),
                }
            }
            Link::Hdlc(hdlc) => {
                let mut out = hdlc.send_apdu(apdu).map_err(|e| DlmsError::Hdlc(e.to_string()))?;
                let mut ignored = 0;
                loop {
                    let matcher = match &self.link {
                        Link::Hdlc(h) => h.matcher(),
                        Link::Wrapper { .. } => return Err(DlmsError::State("link changed")),
                    };
                    let reply = self.exchange(out.clone(), matcher, self.retries).await?;
                    let frame = decode_frame(&reply)?;
                    let Link::Hdlc(hdlc) = &mut self.link else {
                        return Err(DlmsError::State("link changed"));
                    };
                    match hdlc.on_frame(&frame).map_err(|e| DlmsError::Hdlc(e.to_string()))? {
                        Action::Apdu(apdu) => return Ok(apdu),
                        Action::Send(next) => {
                            ignored = 0;
                            out = next;
                        }
                        // A duplicate of the segment taken last: the meter missed our answer to it, so the
                        // frame sent last goes out again.
                        Action::Ignore => {
                            ignored += 1;
                            if ignored > MAX_IGNORED {
                                return Err(DlmsError::Hdlc(format!("{ignored} duplicate frames in a row")));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Runs one service to completion (GET blocks included).
    async fn run(&mut self, request: (Vec<u8>, Pending)) -> Result<Outcome, DlmsError> {
        let (mut apdu, mut pending) = request;
        loop {
            let reply = self.transfer(&apdu).await?;
            match self.association.on_response(&mut pending, &reply)? {
                Progress::Send(next) => apdu = next,
                Progress::Done(outcome) => return Ok(outcome),
            }
        }
    }

    /// False once an HDLC exchange failed (timeout after the retries, frame reject, sequence error): the
    /// link's sequence numbers are then out of step with the meter, so every further request fails at once
    /// with [`DlmsError::State`]; [`Session::close`] still sends the DISC. Open a new session to go on.
    /// (Over the wrapper a failed exchange leaves the session usable.)
    pub fn is_usable(&self) -> bool {
        !self.broken
    }

    /// The association (negotiated conformance and PDU size, server system title).
    pub fn association(&self) -> &Association {
        &self.association
    }

    /// GET of one attribute, with optional selective access; long values arrive in blocks and are
    /// reassembled.
    pub async fn get(
        &mut self,
        attribute: AttributeDescriptor,
        access: Option<SelectiveAccess>,
    ) -> Result<Data, DlmsError> {
        let request = self.association.get(attribute, access)?;
        match self.run(request).await? {
            Outcome::Data(d) => Ok(d),
            other => Err(DlmsError::Unexpected(format!("GET ended with {other:?}"))),
        }
    }

    /// Several attributes at once: one result per attribute, in order, a refused attribute as a
    /// [`GetDataResult::Error`] value. Uses GET with list when the meter negotiated multiple-references,
    /// in as many requests as its max receive PDU size needs; otherwise one GET per attribute.
    pub async fn get_list(
        &mut self,
        items: Vec<(AttributeDescriptor, Option<SelectiveAccess>)>,
    ) -> Result<Vec<GetDataResult>, DlmsError> {
        let negotiated = self.association.negotiated();
        let multiple = negotiated.is_some_and(|n| n.negotiated_conformance.has(Conformance::MULTIPLE_REFERENCES));
        let max_pdu = negotiated.map_or(0, |n| usize::from(n.server_max_receive_pdu_size));
        let mut results = Vec::with_capacity(items.len());
        if !multiple || items.len() == 1 {
            for (attribute, access) in items {
                results.push(match self.get(attribute, access).await {
                    Ok(data) => GetDataResult::Data(data),
                    Err(DlmsError::Access(e)) => GetDataResult::Error(e),
                    Err(e) => return Err(e),
                });
            }
            return Ok(results);
        }
        for group in list_groups(items, max_pdu) {
            let n = group.len();
            let request = self.association.get_list(group)?;
            match self.run(request).await? {
                Outcome::List(part) if part.len() == n => results.extend(part),
                other => return Err(DlmsError::Unexpected(format!("GET with list ended with {other:?}"))),
            }
        }
        Ok(results)
    }

    /// SET of one attribute.
    pub async fn set(&mut self, attribute: AttributeDescriptor, value: Data) -> Result<(), DlmsError> {
        let request = self.association.set(attribute, value)?;
        match self.run(request).await? {
            Outcome::Set => Ok(()),
            other => Err(DlmsError::Unexpected(format!("SET ended with {other:?}"))),
        }
    }

    /// ACTION of one method; returns the method's return parameters, if any.
    pub async fn action(
        &mut self,
        method: MethodDescriptor,
        parameters: Option<Data>,
    ) -> Result<Option<Data>, DlmsError> {
        let request = self.association.action(method, parameters)?;
        match self.run(request).await? {
            Outcome::Action(data) => Ok(data),
            other => Err(DlmsError::Unexpected(format!("ACTION ended with {other:?}"))),
        }
    }

    /// The `scaler_unit` of a register (class 3, 4: attribute 3; class 5: attribute 4), read once per
    /// session and cached.
    pub async fn scaler_unit(&mut self, ln: LogicalName, class_id: u16) -> Result<ScalerUnit, DlmsError> {
        if let Some(su) = self.scalers.get(&(ln, class_id)) {
            return Ok(*su);
        }
        let attribute = cosem::scaler_unit_attribute(class_id)
            .ok_or(DlmsError::Config("only classes 3, 4 and 5 have a scaler_unit"))?;
        let data = self.get(AttributeDescriptor { class_id, instance: ln, attribute }, None).await?;
        let su = ScalerUnit::from_data(&data)?;
        self.scalers.insert((ln, class_id), su);
        Ok(su)
    }

    /// Reads a value with meaning: class 1 (Data) → the raw number of attribute 2, no unit; classes 3
    /// (Register) and 4 (Extended register) → attribute 2 × 10^scaler; class 5 (Demand register) → attribute
    /// 2 (`current_average_value`) × 10^scaler. The `scaler_unit` is cached per session.
    pub async fn read_register(
        &mut self,
        ln: LogicalName,
        class_id: u16,
    ) -> Result<(f64, Option<ScalerUnit>), DlmsError> {
        let scaler = match class_id {
            CLASS_DATA => None,
            3..=5 => Some(self.scaler_unit(ln, class_id).await?),
            _ => return Err(DlmsError::Config("read_register reads classes 1, 3, 4 and 5")),
        };
        let value = self.get(AttributeDescriptor { class_id, instance: ln, attribute: 2 }, None).await?;
        let number = match scaler {
            Some(su) => su.apply(&value),
            None => cosem::data_to_f64(&value),
        };
        let number = number.ok_or_else(|| {
            DlmsError::Unexpected(format!("{} value is not a number: {value:?}", cosem::obis_to_string(&ln)))
        })?;
        Ok((number, scaler))
    }

    /// Reads the clock (`0.0.1.0.0.255` attribute 2) as Unix seconds (see [`cosem::datetime_to_unix`] for
    /// the deviation). Remembers the meter's deviation for range reads.
    pub async fn read_clock(&mut self) -> Result<i64, DlmsError> {
        let data = self.get(CLOCK_TIME, None).await?;
        let dt = cosem::data_to_datetime(&data)
            .ok_or_else(|| DlmsError::Unexpected(format!("clock time is not a date-time: {data:?}")))?;
        self.deviation = Some(dt.deviation());
        cosem::datetime_to_unix(&dt)
            .ok_or_else(|| DlmsError::Unexpected(format!("clock time is not a complete date-time: {dt:?}")))
    }

    /// The meter's deviation: known from an earlier clock read, else read now (a meter that refuses the
    /// clock gets UTC bounds).
    async fn meter_deviation(&mut self) -> Option<i16> {
        if let Some(d) = self.deviation {
            return d;
        }
        match self.read_clock().await {
            Ok(_) => self.deviation.flatten(),
            Err(e) => {
                tracing::debug!(meter = %self.meter, error = %e, "clock not readable; range bounds in UTC");
                self.deviation = Some(None);
                None
            }
        }
    }

    /// Sets the clock (SET of attribute 2) to Unix time `unix`, written as a date-time octet-string in the
    /// meter's local time with its deviation (read from the clock first if not known yet).
    pub async fn set_clock(&mut self, unix: i64) -> Result<(), DlmsError> {
        let deviation = self.meter_deviation().await;
        let value = Data::OctetString(cosem::unix_to_datetime(unix, deviation).to_bytes().to_vec());
        self.set(CLOCK_TIME, value).await
    }

    /// The capture objects and capture period of a profile generic, read once per session.
    pub async fn profile_columns(&mut self, ln: LogicalName) -> Result<(Vec<CaptureObject>, Option<u32>), DlmsError> {
        if let Some(p) = self.profiles.get(&ln) {
            return Ok(p.clone());
        }
        let attribute = |attribute| AttributeDescriptor { class_id: CLASS_PROFILE_GENERIC, instance: ln, attribute };
        let objects = self.get(attribute(profile_attribute::CAPTURE_OBJECTS), None).await?;
        let columns = cosem::parse_capture_objects(&objects)?;
        let period = self.get(attribute(profile_attribute::CAPTURE_PERIOD), None).await?;
        let period_s = cosem::data_to_i64(&period).and_then(|p| u32::try_from(p).ok()).filter(|&p| p > 0);
        self.profiles.insert(ln, (columns.clone(), period_s));
        Ok((columns, period_s))
    }

    /// Reads the entries of profile generic `ln` from `from_unix` to `to_unix` (selective access by range
    /// on its clock column, bounds in the meter's local time): the rows the meter returns, with their own
    /// timestamps (null-data timestamps filled from the capture period; timestamps without a deviation taken
    /// with the deviation of the meter's clock).
    pub async fn read_profile(&mut self, ln: LogicalName, from_unix: i64, to_unix: i64) -> Result<Profile, DlmsError> {
        let (columns, period_s) = self.profile_columns(ln).await?;
        let deviation = self.meter_deviation().await;
        let restricting = columns.iter().find(|c| c.is_clock_time()).copied().unwrap_or(CLOCK_COLUMN);
        let access = cosem::range_access_on(&restricting, from_unix, to_unix, deviation);
        let buffer = self
            .get(
                AttributeDescriptor {
                    class_id: CLASS_PROFILE_GENERIC,
                    instance: ln,
                    attribute: profile_attribute::BUFFER,
                },
                Some(access),
            )
            .await?;
        // Entries stamped without a deviation are in the meter's local time: take its clock's deviation.
        let rows = cosem::profile_rows_or(&buffer, &columns, period_s, deviation)?;
        Ok(Profile { columns, period_s, rows })
    }

    /// Disconnect control `0.0.96.3.10.255` method 1 `remote_disconnect`.
    pub async fn disconnect(&mut self) -> Result<(), DlmsError> {
        self.action(cosem::REMOTE_DISCONNECT, Some(Data::Integer(0))).await.map(|_| ())
    }

    /// Disconnect control `0.0.96.3.10.255` method 2 `remote_reconnect`.
    pub async fn reconnect(&mut self) -> Result<(), DlmsError> {
        self.action(cosem::REMOTE_RECONNECT, Some(Data::Integer(0))).await.map(|_| ())
    }

    /// Releases the association (RLRQ, one attempt) and then the HDLC link (DISC, one attempt; its UA or DM
    /// is not required). Best effort: each step waits at most the session timeout; the error of the
    /// RLRQ, if any, is returned after the DISC was sent. A session that is no longer usable only sends the
    /// DISC.
    pub async fn close(mut self) -> Result<(), DlmsError> {
        // A broken link cannot carry the RLRQ; the error that broke it was reported already.
        let released = if self.broken { Ok(()) } else { self.release().await };
        self.disconnect_link().await;
        released
    }

    async fn release(&mut self) -> Result<(), DlmsError> {
        let rlrq = self.association.release()?;
        let saved = std::mem::replace(&mut self.retries, 0);
        let reply = self.transfer(&rlrq).await;
        self.retries = saved;
        self.association.on_release_response(&reply?)
    }
}

/// Room kept in a request for the GET-with-list header and a glo-ciphering envelope (tag, length, security
/// control, invocation counter, authentication tag).
const LIST_OVERHEAD: usize = 32;

/// Splits GET-with-list items into requests that fit the meter's max receive PDU size (0 = no limit).
fn list_groups(
    items: Vec<(AttributeDescriptor, Option<SelectiveAccess>)>,
    max_pdu: usize,
) -> Vec<Vec<(AttributeDescriptor, Option<SelectiveAccess>)>> {
    let budget = if max_pdu == 0 { usize::MAX } else { max_pdu.saturating_sub(LIST_OVERHEAD).max(1) };
    let mut groups: Vec<Vec<_>> = Vec::new();
    let mut used = 0usize;
    for item in items {
        // class (2) + logical name (6) + attribute (1) + access flag (1) [+ selector + parameters].
        let size = 10 + item.1.as_ref().map_or(0, |a| 1 + a.parameters.to_bytes().len());
        match groups.last_mut() {
            Some(group) if used.saturating_add(size) <= budget => group.push(item),
            _ => {
                groups.push(vec![item]);
                used = 0;
            }
        }
        used = used.saturating_add(size);
    }
    groups
}

/// Decodes the one frame a matcher delimited.
fn decode_frame(bytes: &[u8]) -> Result<Frame, DlmsError> {
    match Frame::decode(bytes) {
        Ok(Some((frame, _))) => Ok(frame),
        Ok(None) => Err(DlmsError::Hdlc("incomplete HDLC frame".into())),
        Err(e) => Err(DlmsError::Hdlc(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    //! The session against a minimal in-process meter (HDLC server state machine or wrapper deframer from
    //! `ami_link`, a small COSEM responder built from our APDU codec and security suite 0) over a loopback
    //! transport and a real `Bus`. The full simulated meter lives in `ami-sim`.

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use ami_link::hdlc::Address;
    use ami_link::hdlc_session::{Deframer, HdlcParameters, HdlcServer, ServerAction};
    use ami_link::{mode_e, wrapper, Bus, BusConfig};
    use ami_media::loopback::{pair, LoopbackTransport};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{Framing, Session, SessionConfig};
    use crate::dlms::apdu::{
        Aare, ActionResponse, Apdu, ApplicationContext, AttributeDescriptor, Conformance, DataAccessResult, DataBlockG,
        GetDataResult, GetRequest, GetResponse, InitiateResponse, InvokeId, LogicalName, Mechanism, Release,
        SetRequest, SetResponse, SourceDiagnostic,
    };
    use crate::dlms::axdr::Data;
    use crate::dlms::client::{Authentication, Ciphering, ClientSettings, DlmsError, MemoryCounter};
    use crate::dlms::cosem::{self, CaptureObject, CLOCK, CLOCK_COLUMN, DISCONNECT_CONTROL};
    use crate::dlms::security::{self, Keys, SystemTitle};

    const ENERGY: LogicalName = [1, 0, 1, 8, 0, 255];
    const LOAD_PROFILE: LogicalName = [1, 0, 99, 1, 0, 255];
    const STUCK: LogicalName = [0, 0, 96, 1, 0, 255];
    const SERVER_TITLE: SystemTitle = *b"AMI\x00\x00\x00\x00\x07";
    const CLIENT_TITLE: SystemTitle = *b"AMIC\x00\x00\x00\x01";
    /// 2024-01-01 00:00:00 UTC: first load profile entry.
    const T0: i64 = 1_704_067_200;
    const ENTRIES: i64 = 4 * 96;

    fn keys() -> Keys {
        Keys::from_hex("000102030405060708090A0B0C0D0E0F", "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF").unwrap()
    }

    /// What the test meter saw.
    #[derive(Debug, Default)]
    struct Log {
        gets: Vec<(u16, LogicalName, i8)>,
        released: bool,
        disconnected_link: bool,
        relay_open: bool,
        clock: i64,
        client_ics: Vec<u32>,
        lists: usize,
    }

    /// A small meter: no auth, LLS or HLS-GMAC; optional ciphering; GET blocks above `max_pdu`.
    struct Meter {
        password: Vec<u8>,
        max_pdu: usize,
        ctos: Vec<u8>,
        stoc: Vec<u8>,
        server_ic: u32,
        blocks: Option<(Vec<u8>, usize, u32)>,
        conformance: u32,
        log: Arc<Mutex<Log>>,
    }

    impl Meter {
        fn new(log: Arc<Mutex<Log>>) -> Self {
            log.lock().unwrap().clock = T0 + 4 * 86_400;
            Meter {
                password: b"12345678".to_vec(),
                max_pdu: 256,
                ctos: Vec::new(),
                stoc: b"server-challenge".to_vec(),
                server_ic: 500,
                blocks: None,
                conformance: 0x00_50_1F,
                log,
            }
        }

        fn seal(&mut self, ciphered: bool, plain: Vec<u8>) -> Vec<u8> {
            if !ciphered {
                return plain;
            }
            self.server_ic += 1;
            security::wrap(&keys(), 0x30, &SERVER_TITLE, self.server_ic, &plain).unwrap()
        }

        fn handle(&mut self, request: &[u8]) -> Vec<u8> {
            let mut apdu = Apdu::decode(request).unwrap();
            let mut ciphered = false;
            if matches!(apdu, Apdu::GloCiphered(_)) {
                let (ic, plain) = security::unwrap(&keys(), &CLIENT_TITLE, &apdu).unwrap();
                self.log.lock().unwrap().client_ics.push(ic);
                apdu = Apdu::decode(&plain).unwrap();
                ciphered = true;
            }
            let reply = match apdu {
                Apdu::Aarq(aarq) => return self.aare(aarq),
                Apdu::Rlrq(_) => {
                    self.log.lock().unwrap().released = true;
                    return Apdu::Rlre(Release { reason: Some(0), user_information: None }).encode();
                }
                // A stuck object: the meter never answers it.
                Apdu::GetRequest(GetRequest::Normal { attribute, .. }) if attribute.instance == STUCK => {
                    return Vec::new();
                }
                Apdu::GetRequest(GetRequest::Normal { invoke, attribute, access }) => {
                    self.get(invoke, attribute, access)
                }
                Apdu::GetRequest(GetRequest::Next { invoke, block }) => self.next_block(invoke, block),
                Apdu::GetRequest(GetRequest::WithList { invoke, items }) => {
                    assert!(request.len() <= self.max_pdu, "request of {} bytes", request.len());
                    self.log.lock().unwrap().lists += 1;
                    let results = items
                        .into_iter()
                        .map(|(a, access)| match self.get(invoke, a, access) {
                            Apdu::GetResponse(GetResponse::Normal { result, .. }) => result,
                            other => panic!("{other:?}"),
                        })
                        .collect();
                    Apdu::GetResponse(GetResponse::WithList { invoke, results })
                }
                Apdu::SetRequest(SetRequest::Normal { invoke, attribute, value, .. }) => {
                    let result = match (attribute.class_id, attribute.instance, cosem::data_to_unix(&value)) {
                        (8, CLOCK, Some(t)) => {
                            self.log.lock().unwrap().clock = t;
                            DataAccessResult::Success
                        }
                        _ => DataAccessResult::ReadWriteDenied,
                    };
                    Apdu::SetResponse(SetResponse::Normal { invoke, result })
                }
                Apdu::ActionRequest(a) => {
                    let (result, ret) = match (a.method.class_id, a.method.instance, a.method.method) {
                        (15, _, 1) => match &a.parameters {
                            Some(Data::OctetString(f))
                                if security::verify_hls_gmac(&keys(), &CLIENT_TITLE, &self.stoc, f).is_ok() =>
                            {
                                self.server_ic += 1;
                                let f_ctos = security::hls_gmac(&keys(), &SERVER_TITLE, self.server_ic, &self.ctos);
                                (0, Some(GetDataResult::Data(Data::OctetString(f_ctos))))
                            }
                            _ => (3, None),
                        },
                        (70, DISCONNECT_CONTROL, m @ (1 | 2)) => {
                            self.log.lock().unwrap().relay_open = m == 1;
                            (0, None)
                        }
                        _ => (4, None),
                    };
                    Apdu::ActionResponse(ActionResponse { invoke: a.invoke, result, return_parameters: ret })
                }
                other => panic!("test meter got {other:?}"),
            };
            self.seal(ciphered, reply.encode())
        }

        fn aare(&mut self, aarq: crate::dlms::apdu::Aarq) -> Vec<u8> {
            let ciphered = aarq.application_context == ApplicationContext::LogicalNameCiphered;
            let refuse = |diag| {
                Apdu::Aare(Aare {
                    application_context: aarq.application_context,
                    result: 1,
                    diagnostic: SourceDiagnostic::User(diag),
                    responding_ap_title: None,
                    mechanism: None,
                    responding_authentication_value: None,
                    user_information: None,
                })
                .encode()
            };
            let (diagnostic, stoc) = match aarq.mechanism {
                None => (0, None),
                Some(Mechanism::Lls) if aarq.calling_authentication_value.as_deref() == Some(&self.password[..]) => {
                    (0, None)
                }
                Some(Mechanism::Lls) => return refuse(13),
                Some(Mechanism::HlsGmac) => {
                    self.ctos = aarq.calling_authentication_value.clone().unwrap_or_default();
                    (14, Some(self.stoc.clone()))
                }
                Some(_) => return refuse(11),
            };
            let initiate = InitiateResponse {
                negotiated_quality_of_service: None,
                negotiated_dlms_version: 6,
                negotiated_conformance: Conformance(self.conformance),
                server_max_receive_pdu_size: self.max_pdu as u16,
                vaa_name: 7,
            };
            let info = self.seal(ciphered, initiate.encode());
            Apdu::Aare(Aare {
                application_context: aarq.application_context,
                result: 0,
                diagnostic: SourceDiagnostic::User(diagnostic),
                responding_ap_title: (ciphered || stoc.is_some()).then(|| SERVER_TITLE.to_vec()),
                mechanism: aarq.mechanism,
                responding_authentication_value: stoc,
                user_information: Some(info),
            })
            .encode()
        }

        fn profile(&self, access: Option<crate::dlms::apdu::SelectiveAccess>) -> Data {
            let (from, to) = match access.map(|a| a.parameters) {
                Some(Data::Structure(p)) => (cosem::data_to_unix(&p[1]).unwrap(), cosem::data_to_unix(&p[2]).unwrap()),
                _ => (i64::MIN, i64::MAX),
            };
            let mut rows = Vec::new();
            let mut previous = None;
            for i in 0..ENTRIES {
                let t = T0 + i * 900;
                if t < from || t > to {
                    continue;
                }
                // Every hour a full timestamp; in between null-data (Blue Book compression).
                let time = if previous == Some(t - 900) && i % 4 != 0 {
                    Data::Null
                } else {
                    Data::OctetString(cosem::unix_to_datetime(t, Some(-60)).to_bytes().to_vec())
                };
                previous = Some(t);
                rows.push(Data::Structure(vec![time, Data::DoubleLongUnsigned(1000 + i as u32)]));
            }
            Data::Array(rows)
        }

        fn get(
            &mut self,
            invoke: InvokeId,
            a: AttributeDescriptor,
            access: Option<crate::dlms::apdu::SelectiveAccess>,
        ) -> Apdu {
            self.log.lock().unwrap().gets.push((a.class_id, a.instance, a.attribute));
            let energy_column = CaptureObject { class_id: 3, instance: ENERGY, attribute: 2, data_index: 0 };
            let value = match (a.class_id, a.instance, a.attribute) {
                (3, ENERGY, 2) => Some(Data::DoubleLongUnsigned(123_456)),
                (3, ENERGY, 3) => Some(Data::Structure(vec![Data::Integer(-1), Data::Enum(30)])),
                (8, CLOCK, 2) => {
                    let t = self.log.lock().unwrap().clock;
                    Some(Data::OctetString(cosem::unix_to_datetime(t, Some(-60)).to_bytes().to_vec()))
                }
                (7, LOAD_PROFILE, 2) => Some(self.profile(access)),
                (7, LOAD_PROFILE, 3) => Some(Data::Array(vec![CLOCK_COLUMN.to_data(), energy_column.to_data()])),
                (7, LOAD_PROFILE, 4) => Some(Data::DoubleLongUnsigned(900)),
                _ => None,
            };
            let Some(value) = value else {
                return Apdu::GetResponse(GetResponse::Normal {
                    invoke,
                    result: GetDataResult::Error(DataAccessResult::ObjectUndefined),
                });
            };
            let raw = value.to_bytes();
            if raw.len() <= self.max_pdu {
                return Apdu::GetResponse(GetResponse::Normal { invoke, result: GetDataResult::Data(value) });
            }
            self.blocks = Some((raw, 0, 0));
            self.next_block(invoke, 0)
        }

        fn next_block(&mut self, invoke: InvokeId, acked: u32) -> Apdu {
            let chunk = self.max_pdu - 16;
            let (raw, at, number) = self.blocks.as_mut().unwrap();
            assert_eq!(acked, *number, "GET next for the wrong block");
            let end = (*at + chunk).min(raw.len());
            let data = raw[*at..end].to_vec();
            *at = end;
            *number += 1;
            let block = DataBlockG { last_block: end == raw.len(), block_number: *number, result: Ok(data) };
            Apdu::GetResponse(GetResponse::WithDataBlock { invoke, block })
        }
    }

    #[derive(Clone, Copy)]
    enum Line {
        Hdlc { mode_e: bool },
        Wrapper,
    }

    async fn read_some(t: &mut LoopbackTransport, buf: &mut [u8]) -> Option<usize> {
        match t.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        }
    }

    /// Serves one connection until the client side closes.
    async fn serve(mut t: LoopbackTransport, line: Line, mut meter: Meter) {
        let mut buf = vec![0u8; 4096];
        match line {
            Line::Wrapper => {
                let mut deframer = wrapper::WrapperDeframer::new();
                while let Some(n) = read_some(&mut t, &mut buf).await {
                    for (h, apdu) in deframer.push(&buf[..n]) {
                        let reply = meter.handle(&apdu);
                        let frame = wrapper::encode(h.destination, h.source, &reply).unwrap();
                        t.write_all(&frame).await.unwrap();
                    }
                }
            }
            Line::Hdlc { mode_e } => {
                if mode_e {
                    let mut pending = Vec::new();
                    while mode_e::parse_sign_on(&pending).is_none() {
                        let n = read_some(&mut t, &mut buf).await.unwrap();
                        pending.extend_from_slice(&buf[..n]);
                    }
                    t.write_all(&mode_e::identification("AMI", b'5', "TEST-METER")).await.unwrap();
                    pending.clear();
                    while mode_e::parse_ack(&pending).is_none() {
                        let n = read_some(&mut t, &mut buf).await.unwrap();
                        pending.extend_from_slice(&buf[..n]);
                    }
                    assert_eq!(mode_e::parse_ack(&pending).map(|a| (a.0, a.1, a.2)), Some((b'2', b'5', b'2')));
                }
                let params = HdlcParameters { max_info_tx: 64, max_info_rx: 64, window_tx: 1, window_rx: 1 };
                let mut server = HdlcServer::new(Address::server(1, Some(17)), params);
                let mut deframer = Deframer::new();
                while let Some(n) = read_some(&mut t, &mut buf).await {
                    for frame in deframer.push(&buf[..n]) {
                        let out = match server.on_frame(&frame) {
                            ServerAction::Reply(bytes) => bytes,
                            ServerAction::Apdu(apdu) => {
                                let reply = meter.handle(&apdu);
                                if reply.is_empty() {
                                    continue;
                                }
                                server.respond(&reply)
                            }
                            ServerAction::Ignore => Vec::new(),
                        };
                        if matches!(frame.control, ami_link::hdlc::Control::DISC { .. }) {
                            meter.log.lock().unwrap().disconnected_link = true;
                        }
                        t.write_all(&out).await.unwrap();
                    }
                }
            }
        }
    }

    fn start(line: Line) -> (ami_link::BusHandle, Arc<Mutex<Log>>) {
        start_with(line, |_| {})
    }

    fn start_with(line: Line, tune: impl FnOnce(&mut Meter)) -> (ami_link::BusHandle, Arc<Mutex<Log>>) {
        let (a, b) = pair();
        let log = Arc::new(Mutex::new(Log::default()));
        let mut meter = Meter::new(log.clone());
        tune(&mut meter);
        tokio::spawn(serve(b, line, meter));
        let bus = Bus::spawn(Box::new(a), BusConfig { id: "loop".into(), ..BusConfig::default() });
        (bus, log)
    }

    fn config(line: Line, settings: ClientSettings) -> SessionConfig {
        let framing = match line {
            Line::Hdlc { .. } => Framing::Hdlc {
                client: 0x10,
                server_logical: 1,
                server_physical: Some(17),
                params: HdlcParameters { max_info_tx: 128, max_info_rx: 128, window_tx: 1, window_rx: 7 },
            },
            Line::Wrapper => Framing::Wrapper { client: 0x10, server: 1 },
        };
        SessionConfig {
            meter: "m1".into(),
            framing,
            optical_mode_e: matches!(line, Line::Hdlc { mode_e: true }),
            settings,
            timeout: Duration::from_secs(2),
            retries: 1,
        }
    }

    /// Registers, clock, a day of load profile in GET blocks and HDLC segments, the relay, release.
    async fn read_everything(line: Line, settings: ClientSettings) -> Arc<Mutex<Log>> {
        let (bus, log) = start(line);
        let mut s = Session::open(&bus, config(line, settings), Arc::new(MemoryCounter::new(1))).await.unwrap();

        let (value, su) = s.read_register(ENERGY, 3).await.unwrap();
        assert_eq!(value, 12_345.6);
        assert_eq!(su.unwrap().unit_symbol(), Some("Wh"));
        s.read_register(ENERGY, 3).await.unwrap();
        let scaler_reads = log.lock().unwrap().gets.iter().filter(|g| g.2 == 3 && g.0 == 3).count();
        assert_eq!(scaler_reads, 1, "scaler_unit is cached per session");
        assert!(matches!(
            s.read_register([1, 0, 2, 8, 0, 255], 3).await,
            Err(DlmsError::Access(DataAccessResult::ObjectUndefined))
        ));

        assert_eq!(s.read_clock().await.unwrap(), T0 + 4 * 86_400);
        s.set_clock(T0 + 4 * 86_400 + 3600).await.unwrap();
        assert_eq!(log.lock().unwrap().clock, T0 + 4 * 86_400 + 3600);

        // One day starting at 02:00 UTC: 97 entries (both bounds inclusive), most with compressed times.
        let from = T0 + 86_400 + 7200;
        let p = s.read_profile(LOAD_PROFILE, from, from + 86_400).await.unwrap();
        assert_eq!(p.period_s, Some(900));
        assert_eq!(
            p.columns,
            vec![CLOCK_COLUMN, CaptureObject { class_id: 3, instance: ENERGY, attribute: 2, data_index: 0 }]
        );
        assert_eq!(p.rows.len(), 97);
        for (k, row) in p.rows.iter().enumerate() {
            let t = from + 900 * k as i64;
            assert_eq!(row.time, Some(t));
            assert_eq!(row.values[1], Data::DoubleLongUnsigned(1000 + ((t - T0) / 900) as u32));
        }
        assert!(p.rows.iter().filter(|r| r.values[0] == Data::Null).count() > 60);
        // Capture objects and period are read once per session.
        let again = s.read_profile(LOAD_PROFILE, from, from + 3600).await.unwrap();
        assert_eq!(again.rows.len(), 5);
        let column_reads = log.lock().unwrap().gets.iter().filter(|g| g.0 == 7 && g.2 != 2).count();
        assert_eq!(column_reads, 2);

        s.disconnect().await.unwrap();
        assert!(log.lock().unwrap().relay_open);
        s.reconnect().await.unwrap();
        assert!(!log.lock().unwrap().relay_open);

        s.close().await.unwrap();
        let l = log.lock().unwrap();
        assert!(l.released);
        drop(l);
        log
    }

    #[tokio::test]
    async fn hdlc_session_reads_registers_clock_and_profile_in_blocks_and_segments() {
        let log = read_everything(Line::Hdlc { mode_e: false }, ClientSettings::default()).await;
        assert!(log.lock().unwrap().disconnected_link);
    }

    #[tokio::test]
    async fn optical_mode_e_opening_then_hdlc() {
        let settings = ClientSettings {
            authentication: Authentication::Low { password: b"12345678".to_vec() },
            ..ClientSettings::default()
        };
        read_everything(Line::Hdlc { mode_e: true }, settings).await;
    }

    #[tokio::test]
    async fn wrapper_session_with_hls_gmac_and_ciphering() {
        let settings = ClientSettings {
            authentication: Authentication::HighGmac,
            ciphering: Some(Ciphering::new(keys(), CLIENT_TITLE)),
            ..ClientSettings::default()
        };
        let log = read_everything(Line::Wrapper, settings).await;
        let ics = log.lock().unwrap().client_ics.clone();
        assert!(ics.len() > 10);
        assert!(ics.windows(2).all(|w| w[0] < w[1]), "{ics:?}");
    }

    #[tokio::test]
    async fn hdlc_session_with_hls_gmac_and_ciphering() {
        let settings = ClientSettings {
            authentication: Authentication::HighGmac,
            ciphering: Some(Ciphering::new(keys(), CLIENT_TITLE)),
            ..ClientSettings::default()
        };
        read_everything(Line::Hdlc { mode_e: false }, settings).await;
    }

    #[tokio::test]
    async fn wrong_password_fails_and_releases_the_link() {
        let (bus, log) = start(Line::Hdlc { mode_e: false });
        let settings = ClientSettings {
            authentication: Authentication::Low { password: b"wrong".to_vec() },
            ..ClientSettings::default()
        };
        let opened =
            Session::open(&bus, config(Line::Hdlc { mode_e: false }, settings), Arc::new(MemoryCounter::new(1))).await;
        assert!(matches!(opened, Err(DlmsError::AuthenticationFailed)), "{opened:?}");
        // The DISC went out before the error came back.
        assert!(log.lock().unwrap().disconnected_link);
    }

    #[tokio::test]
    async fn hls_with_wrong_keys_fails() {
        let (bus, _log) = start(Line::Wrapper);
        let wrong = Keys::from_hex("000102030405060708090A0B0C0D0E0F", "00D1D2D3D4D5D6D7D8D9DADBDCDDDEDF").unwrap();
        let settings = ClientSettings {
            authentication: Authentication::HighGmac,
            ciphering: Some(Ciphering { keys: wrong, system_title: CLIENT_TITLE, security_control: 0x00 }),
            ..ClientSettings::default()
        };
        let opened = Session::open(&bus, config(Line::Wrapper, settings), Arc::new(MemoryCounter::new(1))).await;
        assert!(matches!(opened, Err(DlmsError::AuthenticationFailed)), "{opened:?}");
    }

    #[tokio::test]
    async fn a_failed_hdlc_exchange_makes_the_session_unusable_but_close_still_disconnects() {
        let line = Line::Hdlc { mode_e: false };
        let (bus, log) = start(line);
        let mut cfg = config(line, ClientSettings::default());
        cfg.timeout = Duration::from_millis(200);
        let mut s = Session::open(&bus, cfg, Arc::new(MemoryCounter::new(1))).await.unwrap();
        assert!(s.is_usable());
        let stuck = s.get(AttributeDescriptor { class_id: 1, instance: STUCK, attribute: 2 }, None).await;
        assert!(matches!(stuck, Err(DlmsError::Link(_) | DlmsError::Hdlc(_))), "{stuck:?}");
        assert!(!s.is_usable());
        let next = s.read_register(ENERGY, 3).await;
        assert!(matches!(next, Err(DlmsError::State(_))), "{next:?}");
        let started = std::time::Instant::now();
        s.close().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(log.lock().unwrap().disconnected_link);
    }

    #[tokio::test]
    async fn get_list_splits_by_pdu_size_or_falls_back_to_single_gets() {
        let items: Vec<_> = (0..40)
            .map(|i| {
                let instance = if i % 2 == 0 { ENERGY } else { [1, 0, 2, 8, 0, 255] };
                (AttributeDescriptor { class_id: 3, instance, attribute: 2 }, None)
            })
            .collect();
        let check = |results: Vec<GetDataResult>| {
            assert_eq!(results.len(), 40);
            for (i, r) in results.iter().enumerate() {
                let want = if i % 2 == 0 {
                    GetDataResult::Data(Data::DoubleLongUnsigned(123_456))
                } else {
                    GetDataResult::Error(DataAccessResult::ObjectUndefined)
                };
                assert_eq!(r, &want, "item {i}");
            }
        };
        for ciphered in [false, true] {
            // multiple-references negotiated: 40 items × 10 bytes do not fit 256 bytes, so 2 lists.
            let (bus, log) = start_with(Line::Wrapper, |m| m.conformance = 0x00_52_1F);
            let settings = if ciphered {
                ClientSettings {
                    authentication: Authentication::HighGmac,
                    ciphering: Some(Ciphering::new(keys(), CLIENT_TITLE)),
                    ..ClientSettings::default()
                }
            } else {
                ClientSettings::default()
            };
            let mut s =
                Session::open(&bus, config(Line::Wrapper, settings), Arc::new(MemoryCounter::new(1))).await.unwrap();
            check(s.get_list(items.clone()).await.unwrap());
            assert_eq!(log.lock().unwrap().lists, 2);
            assert_eq!(log.lock().unwrap().gets.len(), 40);
        }
        // Without multiple-references: one GET each.
        let (bus, log) = start(Line::Wrapper);
        let mut s =
            Session::open(&bus, config(Line::Wrapper, ClientSettings::default()), Arc::new(MemoryCounter::new(1)))
                .await
                .unwrap();
        check(s.get_list(items).await.unwrap());
        assert_eq!(log.lock().unwrap().lists, 0);
        assert_eq!(log.lock().unwrap().gets.len(), 40);
    }
}
