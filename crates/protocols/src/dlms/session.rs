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

use super::apdu::{AttributeDescriptor, GetDataResult, LogicalName, MethodDescriptor, SelectiveAccess};
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

    /// GET with list: one result per attribute, errors as values.
    pub async fn get_list(
        &mut self,
        items: Vec<(AttributeDescriptor, Option<SelectiveAccess>)>,
    ) -> Result<Vec<GetDataResult>, DlmsError> {
        let request = self.association.get_list(items)?;
        match self.run(request).await? {
            Outcome::List(results) => Ok(results),
            other => Err(DlmsError::Unexpected(format!("GET with list ended with {other:?}"))),
        }
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
    /// timestamps (null-data timestamps filled from the capture period).
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
        let rows = cosem::profile_rows(&buffer, &columns, period_s)?;
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

    /// Releases the association (RLRQ, one attempt; the RLRE is not required) and then the HDLC link
    /// (DISC, one attempt). Best effort: each step waits at most the session timeout; the error of the
    /// RLRQ, if any, is returned after the DISC was sent.
    pub async fn close(mut self) -> Result<(), DlmsError> {
        let released = self.release().await;
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

/// Decodes the one frame a matcher delimited.
fn decode_frame(bytes: &[u8]) -> Result<Frame, DlmsError> {
    match Frame::decode(bytes) {
        Ok(Some((frame, _))) => Ok(frame),
        Ok(None) => Err(DlmsError::Hdlc("incomplete HDLC frame".into())),
        Err(e) => Err(DlmsError::Hdlc(e.to_string())),
    }
}
