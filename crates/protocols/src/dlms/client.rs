//! The sans-IO DLMS/COSEM client association (Green Book DLMS UA 1000-2 §9.3 "DLMS/COSEM application layer
//! service specification", IEC 62056-5-3): AARQ/AARE with no authentication, LLS (password) or HLS-GMAC
//! (mechanism 5, with pass 3/4 through the current association's method 1), GET (normal, with list, with
//! data blocks), SET and ACTION, and the release (RLRQ/RLRE). With [`Ciphering`] every xDLMS APDU travels
//! glo-ciphered (security suite 0, [`super::security`]).
//!
//! # Contract
//! [`Association`] never does I/O and never reads the clock. Each command (`aarq`, `get`, `set`, `action`,
//! `release`) returns the encoded APDU to send; the driver ([`super::session`]) carries it over HDLC or the
//! wrapper and feeds the reply APDU back (`on_aare`, `on_hls_reply`, `on_response`, `on_release_response`).
//! `on_response` answers [`Progress::Send`] (another request of the same service: the next data block) or
//! [`Progress::Done`]. One service at a time: the [`Pending`] a command returns is handed back with its
//! replies.
//!
//! The only outside state is the client's invocation counter ([`InvocationCounter`]): every ciphered APDU
//! and every HLS-GMAC f(StoC) takes a fresh value from it. The HLS challenge CtoS is 16 random bytes from
//! the operating system (`rand::rngs::OsRng`) unless the caller sets one ([`Association::set_challenge`],
//! for tests and vectors).
//!
//! Secrets: passwords and keys never appear in `Debug` output or in errors.
//!
//! Panic contract: no reply bytes and no call order panic anything here; the reassembled data of a long GET
//! is bounded by [`MAX_RESPONSE_LEN`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::apdu::{
    Aare, Aarq, ActionRequest, ActionResponse, Apdu, ApduError, ApplicationContext, AttributeDescriptor,
    ConfirmedServiceError, Conformance, DataAccessResult, ExceptionResponse, GetDataResult, GetRequest, GetResponse,
    InitiateRequest, InitiateResponse, InvokeId, Mechanism, MethodDescriptor, Release, SelectiveAccess, SetRequest,
    SetResponse, SourceDiagnostic, CURRENT_ASSOCIATION,
};
use super::axdr::{self, AxdrError, Data};
use super::security::{self, Keys, SecurityError, SystemTitle, SC_AUTHENTICATED_ENCRYPTED};

/// Largest reassembled result of a GET with data blocks (16 MiB: months of a 15-minute load profile fit
/// many times over; a meter that sends more is cut off with an error instead of exhausting memory).
pub const MAX_RESPONSE_LEN: usize = 16 << 20;

/// Length of the HLS challenge CtoS the client generates (Green Book: 8 to 64 bytes).
pub const CHALLENGE_LEN: usize = 16;

/// The DLMS version the client proposes (6).
const DLMS_VERSION: u8 = 6;

/// How the client authenticates (the AARQ's mechanism name).
#[derive(Clone, PartialEq, Eq)]
pub enum Authentication {
    /// Lowest level security: no authentication (public client, usually client SAP 0x10).
    None,
    /// Low level security (mechanism 1): the password travels in the AARQ.
    Low {
        /// The LLS secret.
        password: Vec<u8>,
    },
    /// High level security with GMAC (mechanism 5): challenges CtoS/StoC answered with GMAC tags made with
    /// the [`Ciphering`] keys and system titles (which are therefore required).
    HighGmac,
}

impl std::fmt::Debug for Authentication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authentication::None => f.write_str("None"),
            Authentication::Low { .. } => f.write_str("Low { password: <redacted> }"),
            Authentication::HighGmac => f.write_str("HighGmac"),
        }
    }
}

/// Security suite 0 settings of the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ciphering {
    /// Global unicast encryption key and authentication key (redacted in `Debug`).
    pub keys: Keys,
    /// The client's system title (calling-AP-title, and the IV of everything the client protects).
    pub system_title: SystemTitle,
    /// Security control byte of the client's APDUs. Default `0x30` (authenticated and encrypted); `0x10`
    /// authenticated only, `0x20` encrypted only. `0x00` means no glo-ciphering at all: APDUs travel plain
    /// in the non-ciphered LN context, and the keys and system title serve HLS-GMAC only.
    pub security_control: u8,
}

impl Ciphering {
    /// Authenticated and encrypted (`0x30`) ciphering with `keys` and the client's `system_title`.
    pub fn new(keys: Keys, system_title: SystemTitle) -> Ciphering {
        Ciphering { keys, system_title, security_control: SC_AUTHENTICATED_ENCRYPTED }
    }
}

/// What the client proposes in its AARQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// Authentication mechanism. Default [`Authentication::None`].
    pub authentication: Authentication,
    /// Glo-ciphering of every xDLMS APDU; `None` (default) sends them plain.
    pub ciphering: Option<Ciphering>,
    /// client-max-receive-pdu-size proposed to the meter. Default 1024 (meters split longer results into
    /// GET data blocks).
    pub max_receive_pdu: u16,
    /// Proposed conformance. Default get, set, action, selective-access, block-transfer-with-get and
    /// multiple-references.
    pub conformance: Conformance,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            authentication: Authentication::None,
            ciphering: None,
            max_receive_pdu: 1024,
            conformance: Conformance(
                Conformance::GET
                    | Conformance::SET
                    | Conformance::ACTION
                    | Conformance::SELECTIVE_ACCESS
                    | Conformance::BLOCK_TRANSFER_WITH_GET
                    | Conformance::MULTIPLE_REFERENCES,
            ),
        }
    }
}

/// The client's invocation counter for security suite 0 (Green Book §9.2.7.2.4.4): every ciphered APDU and
/// every HLS-GMAC tag uses a value never used before with the same key.
pub trait InvocationCounter: Send + Sync {
    /// Returns a value strictly greater than every value returned before (across restarts, for a
    /// persistent implementation: persist the new value *before* returning it, so a crash can skip values
    /// but never repeat one). Fails when the counter cannot advance (exhausted, storage error).
    fn next(&self) -> Result<u32, DlmsError>;
}

/// An in-memory [`InvocationCounter`] for tests and the simulator: counts up from a start value, fails
/// once `u32::MAX` has been used. Not persistent.
#[derive(Debug)]
pub struct MemoryCounter(AtomicU64);

impl MemoryCounter {
    /// A counter whose first value is `first`.
    pub fn new(first: u32) -> MemoryCounter {
        MemoryCounter(AtomicU64::new(u64::from(first)))
    }

    /// The value the next call to `next` returns (if any).
    pub fn peek(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl InvocationCounter for MemoryCounter {
    fn next(&self) -> Result<u32, DlmsError> {
        let v = self.0.fetch_add(1, Ordering::SeqCst);
        u32::try_from(v).map_err(|_| DlmsError::Counter("invocation counter exhausted".into()))
    }
}

/// Everything that can end a DLMS exchange.
#[derive(Debug, thiserror::Error)]
pub enum DlmsError {
    /// An APDU from the meter does not decode.
    #[error("bad APDU: {0}")]
    Apdu(#[from] ApduError),
    /// A data value (the reassembled data blocks of a long GET) does not decode.
    #[error("bad data: {0}")]
    Data(#[from] AxdrError),
    /// Ciphering or HLS-GMAC failed (wrong keys, wrong system title, tampered bytes).
    #[error("security: {0}")]
    Security(#[from] SecurityError),
    /// The meter refused the association (AARE result 1 permanent / 2 transient).
    #[error("association rejected (result {result}, diagnostic {diagnostic:?})")]
    Rejected {
        /// Association-result.
        result: u8,
        /// Result-source-diagnostic.
        diagnostic: SourceDiagnostic,
    },
    /// Authentication failed: wrong LLS password (diagnostic authentication-failure), a meter that refused
    /// our f(StoC), or a meter whose f(CtoS) does not verify (wrong keys or a meter impersonator).
    #[error("authentication failed")]
    AuthenticationFailed,
    /// The meter answered a GET/SET (or an ACTION's return) with a Data-Access-Result.
    #[error("data access refused: {0:?}")]
    Access(DataAccessResult),
    /// An ACTION failed with this Action-Result (Blue Book enum, e.g. 3 read-write-denied).
    #[error("action failed with result {0}")]
    Action(u8),
    /// The meter answered with an EXCEPTION-RESPONSE (e.g. a service it does not support, a deciphering
    /// error).
    #[error("exception response: state error {}, service error {}", .0.state_error, .0.service_error)]
    Exception(ExceptionResponse),
    /// The meter answered with a CONFIRMED-SERVICE-ERROR.
    #[error("confirmed service error: service {}, class {}, value {}", .0.service, .0.class, .0.value)]
    ServiceError(ConfirmedServiceError),
    /// A reply that does not belong here (wrong APDU for the pending service, a block out of order, a
    /// datum without the expected structure); the text says what was received.
    #[error("unexpected: {0}")]
    Unexpected(String),
    /// A reply carries another invoke id than the pending request.
    #[error("reply for invoke id {got}, expected {expected}")]
    InvokeIdMismatch {
        /// The pending request's invoke id.
        expected: u8,
        /// The reply's.
        got: u8,
    },
    /// A ciphered reply whose invocation counter is not above the last one seen (a replayed APDU).
    #[error("replayed ciphered APDU: invocation counter {received} not above {last}")]
    Replay {
        /// The counter in the reply.
        received: u32,
        /// The highest counter seen before.
        last: u32,
    },
    /// A command in the wrong state (GET before the association is established, …).
    #[error("not possible now: {0}")]
    State(&'static str),
    /// The settings cannot work (HLS-GMAC without ciphering keys, …).
    #[error("configuration: {0}")]
    Config(&'static str),
    /// The bus failed (timeout after retries, transport error).
    #[error(transparent)]
    Link(#[from] ami_link::LinkError),
    /// The HDLC link layer (or the wrapper) failed: refused SNRM, frame reject, bad frame.
    #[error("link layer: {0}")]
    Hdlc(String),
    /// The invocation counter could not advance (exhausted, or its store failed).
    #[error("invocation counter: {0}")]
    Counter(String),
}

/// How far a pending service got.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Send this APDU (same service: GET next data block) and feed its reply to `on_response` again.
    Send(Vec<u8>),
    /// The service is complete.
    Done(Outcome),
}

/// The result of a complete service.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// GET: the value.
    Data(Data),
    /// GET with list: one result per requested attribute, in order (errors are values here).
    List(Vec<GetDataResult>),
    /// SET succeeded.
    Set,
    /// ACTION succeeded, with its return parameters if any.
    Action(Option<Data>),
}

/// Which service a [`Pending`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Get,
    GetList(usize),
    Set,
    Action,
}

/// A request sent and not yet answered completely: hand it back to [`Association::on_response`] with each
/// reply.
#[derive(Debug)]
pub struct Pending {
    invoke: InvokeId,
    service: Service,
    /// Raw data of the blocks received so far (GET with data blocks).
    blocks: Vec<u8>,
    /// Number of the last block received (0 = none).
    last_block: u32,
    done: bool,
}

impl Pending {
    fn new(invoke: InvokeId, service: Service) -> Pending {
        Pending { invoke, service, blocks: Vec::new(), last_block: 0, done: false }
    }

    /// The invoke id of the request.
    pub fn invoke_id(&self) -> u8 {
        self.invoke.id()
    }

    /// Data blocks received so far.
    pub fn blocks_received(&self) -> u32 {
        self.last_block
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    AwaitingAare,
    AwaitingHlsReply(InvokeId),
    Associated,
    Releasing,
    Released,
}

/// One client association's state (see the module doc for the call contract).
pub struct Association {
    settings: ClientSettings,
    counter: Arc<dyn InvocationCounter>,
    state: State,
    /// HLS challenge CtoS (set by the caller or generated in `aarq`).
    challenge: Option<Vec<u8>>,
    server_title: Option<SystemTitle>,
    negotiated: Option<InitiateResponse>,
    invoke: u8,
    last_server_ic: Option<u32>,
}

impl std::fmt::Debug for Association {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Association")
            .field("settings", &self.settings)
            .field("state", &self.state)
            .field("server_title", &self.server_title)
            .field("negotiated", &self.negotiated)
            .finish_non_exhaustive()
    }
}

impl Association {
    /// A new association (not yet requested).
    pub fn new(settings: ClientSettings, counter: Arc<dyn InvocationCounter>) -> Self {
        Association {
            settings,
            counter,
            state: State::Idle,
            challenge: None,
            server_title: None,
            negotiated: None,
            invoke: 0,
            last_server_ic: None,
        }
    }

    /// Sets the HLS challenge CtoS the next `aarq` sends (8..=64 bytes; tests and vectors). Without it
    /// `aarq` generates [`CHALLENGE_LEN`] random bytes.
    pub fn set_challenge(&mut self, challenge: Vec<u8>) {
        self.challenge = Some(challenge);
    }

    /// The settings.
    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// The InitiateResponse of the accepted AARE (negotiated conformance, server max receive PDU size).
    pub fn negotiated(&self) -> Option<&InitiateResponse> {
        self.negotiated.as_ref()
    }

    /// The meter's system title from the AARE (ciphered associations).
    pub fn server_system_title(&self) -> Option<&SystemTitle> {
        self.server_title.as_ref()
    }

    /// True once the association is established (after the AARE, and after HLS pass 4 for HLS-GMAC).
    pub fn is_associated(&self) -> bool {
        self.state == State::Associated
    }

    /// The ciphering applied to APDUs (`None` also when the security control is `0x00`: HLS keys only).
    fn cipher(&self) -> Option<&Ciphering> {
        self.settings.ciphering.as_ref().filter(|c| c.security_control & 0x30 != 0)
    }

    fn next_ic(&self) -> Result<u32, DlmsError> {
        self.counter.next()
    }

    fn next_invoke(&mut self) -> InvokeId {
        // Cycle 1..=15 so a late reply to an earlier request is caught by its invoke id.
        self.invoke = self.invoke % 15 + 1;
        InvokeId::confirmed(self.invoke)
    }

    /// Glo-ciphers a plain xDLMS APDU when ciphering is on.
    fn seal(&self, plain: Vec<u8>) -> Result<Vec<u8>, DlmsError> {
        match self.cipher() {
            None => Ok(plain),
            Some(c) => {
                let ic = self.next_ic()?;
                Ok(security::wrap(&c.keys, c.security_control, &c.system_title, ic, &plain)?)
            }
        }
    }

    /// Decodes a reply and removes its ciphering. With ciphering on, only exception responses and
    /// confirmed-service-errors may arrive plain (a meter that cannot decipher answers so).
    fn open(&mut self, apdu: &[u8]) -> Result<Apdu, DlmsError> {
        let decoded = Apdu::decode(apdu)?;
        match (&decoded, self.cipher()) {
            (Apdu::GloCiphered(_) | Apdu::GeneralGloCiphering(_), Some(c)) => {
                let title = self.server_title.ok_or(DlmsError::State("ciphered reply before the AARE"))?;
                let (ic, plain) = security::unwrap(&c.keys, &title, &decoded)?;
                if let Some(last) = self.last_server_ic {
                    if ic <= last {
                        return Err(DlmsError::Replay { received: ic, last });
                    }
                }
                self.last_server_ic = Some(ic);
                Ok(Apdu::decode(&plain)?)
            }
            (Apdu::GloCiphered(_) | Apdu::GeneralGloCiphering(_), None) => {
                Err(DlmsError::Unexpected(format!("ciphered APDU (tag {}) without ciphering settings", decoded.tag())))
            }
            (Apdu::ExceptionResponse(_) | Apdu::ConfirmedServiceError(_), _) | (_, None) => Ok(decoded),
            (_, Some(_)) => {
                Err(DlmsError::Unexpected(format!("unciphered APDU (tag {}) in a ciphered association", decoded.tag())))
            }
        }
    }

    fn initiate_request(&self) -> InitiateRequest {
        InitiateRequest {
            dedicated_key: None,
            response_allowed: true,
            proposed_quality_of_service: None,
            proposed_dlms_version: DLMS_VERSION,
            proposed_conformance: self.settings.conformance,
            client_max_receive_pdu_size: self.settings.max_receive_pdu,
        }
    }

    /// The InitiateRequest for a user-information field, glo-ciphered (tag 33) when ciphering is on.
    fn user_information(&self) -> Result<Vec<u8>, DlmsError> {
        self.seal(self.initiate_request().encode())
    }

    /// The AARQ opening the association (Green Book §9.3.2, §9.4.2.2): application context LN (ciphered
    /// when ciphering is on), the client system title, the mechanism and its calling-authentication-value
    /// (LLS password or HLS challenge CtoS), and the InitiateRequest.
    pub fn aarq(&mut self) -> Result<Vec<u8>, DlmsError> {
        let ciphering = self.settings.ciphering.as_ref();
        let (mechanism, value) = match &self.settings.authentication {
            Authentication::None => (None, None),
            Authentication::Low { password } => (Some(Mechanism::Lls), Some(password.clone())),
            Authentication::HighGmac => {
                if ciphering.is_none() {
                    return Err(DlmsError::Config("HLS-GMAC needs ciphering keys and a client system title"));
                }
                let challenge = match &self.challenge {
                    Some(c) => c.clone(),
                    None => {
                        use rand::RngCore;
                        let mut c = vec![0u8; CHALLENGE_LEN];
                        rand::rngs::OsRng.fill_bytes(&mut c);
                        self.challenge = Some(c.clone());
                        c
                    }
                };
                if !(8..=64).contains(&challenge.len()) {
                    return Err(DlmsError::Config("the HLS challenge must be 8 to 64 bytes"));
                }
                (Some(Mechanism::HlsGmac), Some(challenge))
            }
        };
        let aarq = Aarq {
            application_context: if self.cipher().is_some() {
                ApplicationContext::LogicalNameCiphered
            } else {
                ApplicationContext::LogicalName
            },
            calling_ap_title: ciphering.map(|c| c.system_title.to_vec()),
            mechanism,
            calling_authentication_value: value,
            user_information: Some(self.user_information()?),
        };
        self.state = State::AwaitingAare;
        self.server_title = None;
        self.negotiated = None;
        self.last_server_ic = None;
        Ok(Apdu::Aarq(aarq).encode())
    }

    /// Handles the AARE. `Ok(None)`: associated. `Ok(Some(apdu))`: HLS-GMAC pass 3, send `apdu` (the ACTION
    /// `reply_to_HLS_authentication` on the current association with f(StoC)) and feed the reply to
    /// [`Self::on_hls_reply`].
    pub fn on_aare(&mut self, apdu: &[u8]) -> Result<Option<Vec<u8>>, DlmsError> {
        if self.state != State::AwaitingAare {
            return Err(DlmsError::State("AARE without a pending AARQ"));
        }
        self.state = State::Idle;
        let aare = match Apdu::decode(apdu)? {
            Apdu::Aare(aare) => aare,
            Apdu::ExceptionResponse(e) => return Err(DlmsError::Exception(e)),
            other => return Err(DlmsError::Unexpected(format!("APDU tag {} instead of an AARE", other.tag()))),
        };
        if aare.result != 0 {
            return Err(self.rejection(&aare));
        }
        if self.settings.ciphering.is_some() {
            let title = aare.responding_ap_title.as_deref().and_then(|t| SystemTitle::try_from(t).ok());
            if title.is_none() && (self.cipher().is_some() || self.settings.authentication == Authentication::HighGmac)
            {
                return Err(DlmsError::Unexpected("AARE without the meter's 8-byte system title".into()));
            }
            self.server_title = title;
        }
        let info = aare
            .user_information
            .as_deref()
            .ok_or_else(|| DlmsError::Unexpected("AARE without user-information (InitiateResponse)".into()))?;
        match self.open(info)? {
            Apdu::InitiateResponse(r) => self.negotiated = Some(r),
            Apdu::ConfirmedServiceError(e) => return Err(DlmsError::ServiceError(e)),
            other => {
                return Err(DlmsError::Unexpected(format!("AARE user-information is APDU tag {}", other.tag())));
            }
        }
        match (&self.settings.authentication, &self.settings.ciphering) {
            (Authentication::HighGmac, Some(c)) => {
                let stoc = aare
                    .responding_authentication_value
                    .as_deref()
                    .ok_or_else(|| DlmsError::Unexpected("HLS AARE without the challenge StoC".into()))?;
                let f_stoc = security::hls_gmac(&c.keys, &c.system_title, self.next_ic()?, stoc);
                let invoke = self.next_invoke();
                let request = Apdu::ActionRequest(ActionRequest {
                    invoke,
                    method: MethodDescriptor { class_id: 15, instance: CURRENT_ASSOCIATION, method: 1 },
                    parameters: Some(Data::OctetString(f_stoc)),
                })
                .encode();
                let sealed = self.seal(request)?;
                self.state = State::AwaitingHlsReply(invoke);
                Ok(Some(sealed))
            }
            (Authentication::HighGmac, None) => Err(DlmsError::Config("HLS-GMAC needs ciphering")),
            _ => {
                self.state = State::Associated;
                Ok(None)
            }
        }
    }

    fn rejection(&mut self, aare: &Aare) -> DlmsError {
        if aare.diagnostic == SourceDiagnostic::User(13) {
            return DlmsError::AuthenticationFailed;
        }
        if let Some(info) = aare.user_information.as_deref() {
            // A rejected AARE may carry the reason as a (possibly ciphered) ConfirmedServiceError; the
            // server title is needed to open a ciphered one.
            if self.server_title.is_none() {
                self.server_title = aare.responding_ap_title.as_deref().and_then(|t| SystemTitle::try_from(t).ok());
            }
            if let Ok(Apdu::ConfirmedServiceError(e)) = self.open(info) {
                return DlmsError::ServiceError(e);
            }
        }
        DlmsError::Rejected { result: aare.result, diagnostic: aare.diagnostic }
    }

    /// Handles the reply to HLS pass 3: the meter's f(CtoS) must verify with its system title (pass 4).
    pub fn on_hls_reply(&mut self, apdu: &[u8]) -> Result<(), DlmsError> {
        let State::AwaitingHlsReply(invoke) = self.state else {
            return Err(DlmsError::State("HLS reply without a pending HLS pass 3"));
        };
        self.state = State::Idle;
        let response = match self.open(apdu)? {
            Apdu::ActionResponse(r) => r,
            Apdu::ExceptionResponse(e) => return Err(DlmsError::Exception(e)),
            other => return Err(DlmsError::Unexpected(format!("APDU tag {} instead of the HLS reply", other.tag()))),
        };
        check_invoke(invoke, response.invoke)?;
        let ActionResponse {
            result: 0, return_parameters: Some(GetDataResult::Data(Data::OctetString(f_ctos))), ..
        } = response
        else {
            return Err(DlmsError::AuthenticationFailed);
        };
        let (Some(c), Some(title), Some(ctos)) = (&self.settings.ciphering, &self.server_title, &self.challenge) else {
            return Err(DlmsError::Config("HLS-GMAC needs ciphering"));
        };
        security::verify_hls_gmac(&c.keys, title, ctos, &f_ctos).map_err(|_| DlmsError::AuthenticationFailed)?;
        self.state = State::Associated;
        Ok(())
    }

    fn request(
        &mut self,
        service: Service,
        build: impl FnOnce(InvokeId) -> Apdu,
    ) -> Result<(Vec<u8>, Pending), DlmsError> {
        if self.state != State::Associated {
            return Err(DlmsError::State("no association established"));
        }
        let invoke = self.next_invoke();
        let apdu = self.seal(build(invoke).encode())?;
        Ok((apdu, Pending::new(invoke, service)))
    }

    /// GET.request-normal of `attribute` with optional selective access.
    pub fn get(
        &mut self,
        attribute: AttributeDescriptor,
        access: Option<SelectiveAccess>,
    ) -> Result<(Vec<u8>, Pending), DlmsError> {
        self.request(Service::Get, |invoke| Apdu::GetRequest(GetRequest::Normal { invoke, attribute, access }))
    }

    /// GET.request-with-list (needs multiple-references in the negotiated conformance).
    pub fn get_list(
        &mut self,
        items: Vec<(AttributeDescriptor, Option<SelectiveAccess>)>,
    ) -> Result<(Vec<u8>, Pending), DlmsError> {
        if items.is_empty() {
            return Err(DlmsError::Config("GET with list needs at least one attribute"));
        }
        let n = items.len();
        self.request(Service::GetList(n), |invoke| Apdu::GetRequest(GetRequest::WithList { invoke, items }))
    }

    /// SET.request-normal of `attribute`.
    pub fn set(&mut self, attribute: AttributeDescriptor, value: Data) -> Result<(Vec<u8>, Pending), DlmsError> {
        self.request(Service::Set, |invoke| {
            Apdu::SetRequest(SetRequest::Normal { invoke, attribute, access: None, value })
        })
    }

    /// ACTION.request-normal of `method` with optional parameters.
    pub fn action(
        &mut self,
        method: MethodDescriptor,
        parameters: Option<Data>,
    ) -> Result<(Vec<u8>, Pending), DlmsError> {
        self.request(Service::Action, |invoke| Apdu::ActionRequest(ActionRequest { invoke, method, parameters }))
    }

    /// Handles a reply to `pending` (deciphering it first when ciphering is on).
    pub fn on_response(&mut self, pending: &mut Pending, apdu: &[u8]) -> Result<Progress, DlmsError> {
        if pending.done {
            return Err(DlmsError::State("reply to a service that is already complete"));
        }
        let reply = self.open(apdu)?;
        let progress = self.progress(pending, reply);
        if !matches!(progress, Ok(Progress::Send(_))) {
            pending.done = true;
        }
        progress
    }

    fn progress(&mut self, pending: &mut Pending, reply: Apdu) -> Result<Progress, DlmsError> {
        let unexpected =
            |what: &str| DlmsError::Unexpected(format!("{what} in reply to a {:?} request", pending.service));
        match reply {
            Apdu::ExceptionResponse(e) => Err(DlmsError::Exception(e)),
            Apdu::ConfirmedServiceError(e) => Err(DlmsError::ServiceError(e)),
            Apdu::GetResponse(GetResponse::Normal { invoke, result }) => {
                check_invoke(pending.invoke, invoke)?;
                match (pending.service, result) {
                    (Service::Get, GetDataResult::Data(d)) if pending.last_block == 0 => {
                        Ok(Progress::Done(Outcome::Data(d)))
                    }
                    (Service::Get, GetDataResult::Error(e)) => Err(DlmsError::Access(e)),
                    _ => Err(unexpected("get-response-normal")),
                }
            }
            Apdu::GetResponse(GetResponse::WithList { invoke, results }) => {
                check_invoke(pending.invoke, invoke)?;
                match pending.service {
                    Service::GetList(n) if results.len() == n && pending.last_block == 0 => {
                        Ok(Progress::Done(Outcome::List(results)))
                    }
                    Service::GetList(n) => {
                        Err(DlmsError::Unexpected(format!("{} results for {n} attributes", results.len())))
                    }
                    _ => Err(unexpected("get-response-with-list")),
                }
            }
            Apdu::GetResponse(GetResponse::WithDataBlock { invoke, block }) => {
                check_invoke(pending.invoke, invoke)?;
                if !matches!(pending.service, Service::Get | Service::GetList(_)) {
                    return Err(unexpected("get-response-with-datablock"));
                }
                let raw = block.result.map_err(DlmsError::Access)?;
                let expected = pending.last_block.wrapping_add(1);
                if block.block_number != expected {
                    return Err(DlmsError::Unexpected(format!(
                        "data block {} where block {expected} was due",
                        block.block_number
                    )));
                }
                if pending.blocks.len().saturating_add(raw.len()) > MAX_RESPONSE_LEN {
                    return Err(DlmsError::Unexpected(format!("GET result longer than {MAX_RESPONSE_LEN} bytes")));
                }
                pending.blocks.extend_from_slice(&raw);
                pending.last_block = block.block_number;
                if !block.last_block {
                    let next = Apdu::GetRequest(GetRequest::Next { invoke: pending.invoke, block: block.block_number });
                    return Ok(Progress::Send(self.seal(next.encode())?));
                }
                let raw = std::mem::take(&mut pending.blocks);
                match pending.service {
                    Service::GetList(n) => {
                        let results = decode_result_list(&raw)?;
                        if results.len() != n {
                            return Err(DlmsError::Unexpected(format!("{} results for {n} attributes", results.len())));
                        }
                        Ok(Progress::Done(Outcome::List(results)))
                    }
                    _ => {
                        let (data, used) = Data::decode(&raw)?;
                        if used != raw.len() {
                            return Err(DlmsError::Unexpected(format!(
                                "{} bytes after the data of a block transfer",
                                raw.len() - used
                            )));
                        }
                        Ok(Progress::Done(Outcome::Data(data)))
                    }
                }
            }
            Apdu::SetResponse(SetResponse::Normal { invoke, result }) if pending.service == Service::Set => {
                check_invoke(pending.invoke, invoke)?;
                match result {
                    DataAccessResult::Success => Ok(Progress::Done(Outcome::Set)),
                    e => Err(DlmsError::Access(e)),
                }
            }
            Apdu::ActionResponse(r) if pending.service == Service::Action => {
                check_invoke(pending.invoke, r.invoke)?;
                if r.result != 0 {
                    return Err(DlmsError::Action(r.result));
                }
                match r.return_parameters {
                    None => Ok(Progress::Done(Outcome::Action(None))),
                    Some(GetDataResult::Data(d)) => Ok(Progress::Done(Outcome::Action(Some(d)))),
                    Some(GetDataResult::Error(e)) => Err(DlmsError::Access(e)),
                }
            }
            other => Err(unexpected(&format!("APDU tag {}", other.tag()))),
        }
    }

    /// The RLRQ releasing the association (reason normal; with ciphering its user-information carries a
    /// ciphered InitiateRequest, Green Book §9.3.3). Valid in any state.
    pub fn release(&mut self) -> Result<Vec<u8>, DlmsError> {
        let user_information =
            if self.cipher().is_some() && self.server_title.is_some() { Some(self.user_information()?) } else { None };
        self.state = State::Releasing;
        Ok(Apdu::Rlrq(Release { reason: Some(0), user_information }).encode())
    }

    /// Handles the RLRE: the association is released.
    pub fn on_release_response(&mut self, apdu: &[u8]) -> Result<(), DlmsError> {
        self.state = State::Released;
        match Apdu::decode(apdu)? {
            Apdu::Rlre(_) => Ok(()),
            Apdu::ExceptionResponse(e) => Err(DlmsError::Exception(e)),
            other => Err(DlmsError::Unexpected(format!("APDU tag {} instead of an RLRE", other.tag()))),
        }
    }
}

fn check_invoke(expected: InvokeId, got: InvokeId) -> Result<(), DlmsError> {
    if expected.id() == got.id() {
        Ok(())
    } else {
        Err(DlmsError::InvokeIdMismatch { expected: expected.id(), got: got.id() })
    }
}

/// The raw data of a get-response-with-list sent in blocks: `SEQUENCE OF Get-Data-Result` (an A-XDR count,
/// then per result `00` + Data or `01` + Data-Access-Result).
fn decode_result_list(raw: &[u8]) -> Result<Vec<GetDataResult>, DlmsError> {
    let (count, mut at) = axdr::decode_length(raw)?;
    let truncated = || DlmsError::Apdu(ApduError::Truncated("get-response-with-list data blocks"));
    if count > raw.len() {
        return Err(truncated());
    }
    let mut results = Vec::with_capacity(count);
    for _ in 0..count {
        let choice = *raw.get(at).ok_or_else(truncated)?;
        at += 1;
        match choice {
            0 => {
                let (data, used) = Data::decode(raw.get(at..).unwrap_or_default())?;
                at += used;
                results.push(GetDataResult::Data(data));
            }
            1 => {
                let e = *raw.get(at).ok_or_else(truncated)?;
                at += 1;
                results.push(GetDataResult::Error(DataAccessResult::from_u8(e)));
            }
            other => {
                return Err(DlmsError::Apdu(ApduError::BadValue { what: "Get-Data-Result", value: u32::from(other) }))
            }
        }
    }
    if at != raw.len() {
        return Err(DlmsError::Apdu(ApduError::Trailing(raw.len() - at)));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlms::apdu::DataBlockG;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    const CLOCK: AttributeDescriptor =
        AttributeDescriptor { class_id: 8, instance: [0, 0, 1, 0, 0, 255], attribute: 2 };
    const ENERGY: AttributeDescriptor =
        AttributeDescriptor { class_id: 3, instance: [1, 0, 1, 8, 0, 255], attribute: 2 };

    // Green Book / dlms-cosem 21.3.2 test vectors (tests/test_security.py, tests/test_asce/test_aare.py).
    const EK: &str = "000102030405060708090A0B0C0D0E0F";
    const AK: &str = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF";
    const CLIENT_TITLE: SystemTitle = [0x4D, 0x4D, 0x4D, 0, 0, 0, 0, 1];
    const SERVER_TITLE: SystemTitle = [0x4D, 0x4D, 0x4D, 0, 0, 0xBC, 0x61, 0x4E];
    const CTOS: &str = "4B35366956616759"; // "K56iVagY"
    const STOC: &str = "503677524A323146"; // "P6wRJ21F"

    /// AARE: accepted, LN context, InitiateResponse conformance 00 50 1F, server max PDU 500, VAA 7.
    const AARE_ACCEPTED: &str =
        "6129A109060760857405080101A203020100A305A103020100BE10040E0800065F1F040000501F01F40007";

    fn keys() -> Keys {
        Keys::from_hex(EK, AK).unwrap()
    }

    fn plain() -> Association {
        Association::new(ClientSettings::default(), Arc::new(MemoryCounter::new(1)))
    }

    fn associated() -> Association {
        let mut a = plain();
        a.aarq().unwrap();
        assert_eq!(a.on_aare(&hex(AARE_ACCEPTED)).unwrap(), None);
        a
    }

    fn ciphered_settings(auth: Authentication) -> ClientSettings {
        ClientSettings {
            authentication: auth,
            ciphering: Some(Ciphering::new(keys(), CLIENT_TITLE)),
            ..ClientSettings::default()
        }
    }

    /// The meter's side: a ciphered AARE (glo-initiate-response made with the server title).
    fn ciphered_aare(server_ic: u32, mechanism: Option<Mechanism>, stoc: Option<Vec<u8>>) -> Vec<u8> {
        let initiate = InitiateResponse {
            negotiated_quality_of_service: None,
            negotiated_dlms_version: 6,
            negotiated_conformance: Conformance(0x00_50_1F),
            server_max_receive_pdu_size: 500,
            vaa_name: 7,
        };
        let info = security::wrap(&keys(), 0x30, &SERVER_TITLE, server_ic, &initiate.encode()).unwrap();
        Apdu::Aare(Aare {
            application_context: ApplicationContext::LogicalNameCiphered,
            result: 0,
            diagnostic: SourceDiagnostic::User(if mechanism.is_some() { 14 } else { 0 }),
            responding_ap_title: Some(SERVER_TITLE.to_vec()),
            mechanism,
            responding_authentication_value: stoc,
            user_information: Some(info),
        })
        .encode()
    }

    /// The meter's side: opens a ciphered client APDU (made with the client title).
    fn open_request(apdu: &[u8]) -> (u32, Vec<u8>) {
        security::unwrap(&keys(), &CLIENT_TITLE, &Apdu::decode(apdu).unwrap()).unwrap()
    }

    #[test]
    fn aarq_without_authentication_is_the_green_book_encoding() {
        let mut a = plain();
        // Gurux's translator decodes these bytes as an AARQ with the fields below.
        // AARQ: LN context (A1 09 06 07 60 85 74 05 08 01 01), user-information (BE 10 04 0E) holding the
        // InitiateRequest 01 00 00 00 06 (no dedicated key, response allowed, no QoS, version 6),
        // conformance 5F 1F 04 00 00 12 1D (block-transfer-with-get, multiple-references, get, set,
        // selective-access, action), max receive PDU 04 00 (1024).
        assert_eq!(a.aarq().unwrap(), hex("601DA109060760857405080101BE10040E01000000065F1F040000121D0400"));
        assert!(!a.is_associated());
        assert_eq!(a.on_aare(&hex(AARE_ACCEPTED)).unwrap(), None);
        assert!(a.is_associated());
        let n = a.negotiated().unwrap();
        assert_eq!(n.server_max_receive_pdu_size, 500);
        assert_eq!(n.negotiated_conformance, Conformance(0x00_50_1F));
    }

    #[test]
    fn aare_rejections_are_typed() {
        // Application context name not supported (dlms-cosem vector).
        let mut a = plain();
        a.aarq().unwrap();
        let e =
            a.on_aare(&hex("6129A109060760857405080101A203020101A305A103020102BE10040E0800065F1F040000501F01F40007"));
        assert!(matches!(e, Err(DlmsError::Rejected { result: 1, diagnostic: SourceDiagnostic::User(2) })), "{e:?}");
        assert!(!a.is_associated());
        assert!(matches!(a.get(CLOCK, None), Err(DlmsError::State(_))));
        // DLMS version too low: a ConfirmedServiceError (initiate error) in the user-information.
        let mut a = plain();
        a.aarq().unwrap();
        let e = a.on_aare(&hex("611FA109060760857405080101A203020101A305A103020101BE0604040E010601"));
        assert!(
            matches!(e, Err(DlmsError::ServiceError(ConfirmedServiceError { service: 1, class: 6, value: 1 }))),
            "{e:?}"
        );
        // Wrong password: diagnostic 13 authentication-failure.
        let mut a = Association::new(
            ClientSettings {
                authentication: Authentication::Low { password: b"12345678".to_vec() },
                ..Default::default()
            },
            Arc::new(MemoryCounter::new(1)),
        );
        // LLS AARQ: 8A 02 07 80 (sender-acse-requirements: authentication), 8B 07 60 85 74 05 08 02 01
        // (mechanism LLS), AC 0A 80 08 "12345678" (calling-authentication-value).
        assert_eq!(
            a.aarq().unwrap(),
            hex("6036A1090607608574050801018A0207808B0760857405080201AC0A80083132333435363738BE10040E01000000065F1F040000121D0400")
        );
        let e =
            a.on_aare(&hex("6129A109060760857405080101A203020101A305A10302010DBE10040E0800065F1F040000501F01F40007"));
        assert!(matches!(e, Err(DlmsError::AuthenticationFailed)), "{e:?}");
        // An AARE that is not one.
        let mut a = plain();
        a.aarq().unwrap();
        assert!(matches!(a.on_aare(&hex("C401C1000600000001")), Err(DlmsError::Unexpected(_))));
        // An AARE without a pending AARQ.
        assert!(matches!(plain().on_aare(&hex(AARE_ACCEPTED)), Err(DlmsError::State(_))));
    }

    #[test]
    fn passwords_and_keys_stay_out_of_debug() {
        let settings = ClientSettings {
            authentication: Authentication::Low { password: b"s3cr3t-pw".to_vec() },
            ciphering: Some(Ciphering::new(keys(), CLIENT_TITLE)),
            ..Default::default()
        };
        let a = Association::new(settings.clone(), Arc::new(MemoryCounter::new(1)));
        for text in [format!("{settings:?}"), format!("{a:?}")] {
            assert!(!text.contains("s3cr3t"), "{text}");
            assert!(!text.contains("115, 51, 99"), "{text}");
            assert!(!text.to_uppercase().contains("D0D1") && !text.contains("208, 209"), "{text}");
        }
    }

    #[test]
    fn hls_gmac_passes_3_and_4_with_the_green_book_vector() {
        // IC 0 goes to the AARQ's glo-initiate-request, IC 1 to f(StoC) (the vector's value), IC 2 to the
        // glo-action-request carrying it.
        let counter = Arc::new(MemoryCounter::new(0));
        let mut a = Association::new(ciphered_settings(Authentication::HighGmac), counter.clone());
        a.set_challenge(hex(CTOS));
        let aarq = match Apdu::decode(&a.aarq().unwrap()).unwrap() {
            Apdu::Aarq(aarq) => aarq,
            other => panic!("{other:?}"),
        };
        assert_eq!(aarq.application_context, ApplicationContext::LogicalNameCiphered);
        assert_eq!(aarq.calling_ap_title.as_deref(), Some(&CLIENT_TITLE[..]));
        assert_eq!(aarq.mechanism, Some(Mechanism::HlsGmac));
        assert_eq!(aarq.calling_authentication_value, Some(hex(CTOS)));
        let (ic, initiate) = open_request(aarq.user_information.as_deref().unwrap());
        assert_eq!(ic, 0);
        assert_eq!(InitiateRequest::decode(&initiate).unwrap().client_max_receive_pdu_size, 1024);

        let pass3 = a.on_aare(&ciphered_aare(100, Some(Mechanism::HlsGmac), Some(hex(STOC)))).unwrap().unwrap();
        assert!(!a.is_associated());
        assert_eq!(a.server_system_title(), Some(&SERVER_TITLE));
        let (ic, plain) = open_request(&pass3);
        assert_eq!(ic, 2);
        let Apdu::ActionRequest(action) = Apdu::decode(&plain).unwrap() else { panic!() };
        assert_eq!(action.method, MethodDescriptor { class_id: 15, instance: [0, 0, 40, 0, 0, 255], method: 1 });
        // f(StoC) = SC 10 || IC 00000001 || GMAC 1A52FE7DD3E72748973C1E28 (dlms-cosem test_gmac).
        assert_eq!(action.parameters, Some(Data::OctetString(hex("10 00000001 1A52FE7DD3E72748973C1E28"))));

        // Pass 4: the meter's f(CtoS) made with its title.
        let reply = |ic: u32, f: Vec<u8>| {
            let plain = Apdu::ActionResponse(ActionResponse {
                invoke: action.invoke,
                result: 0,
                return_parameters: Some(GetDataResult::Data(Data::OctetString(f))),
            })
            .encode();
            security::wrap(&keys(), 0x30, &SERVER_TITLE, ic, &plain).unwrap()
        };
        let good = security::hls_gmac(&keys(), &SERVER_TITLE, 0x0123_4567, &hex(CTOS));
        let mut forged = good.clone();
        forged[16] ^= 1;
        let mut b = Association::new(ciphered_settings(Authentication::HighGmac), Arc::new(MemoryCounter::new(0)));
        b.set_challenge(hex(CTOS));
        b.aarq().unwrap();
        b.on_aare(&ciphered_aare(100, Some(Mechanism::HlsGmac), Some(hex(STOC)))).unwrap().unwrap();
        assert!(matches!(b.on_hls_reply(&reply(101, forged)), Err(DlmsError::AuthenticationFailed)));
        assert!(!b.is_associated());

        a.on_hls_reply(&reply(101, good)).unwrap();
        assert!(a.is_associated());
        assert_eq!(counter.peek(), 3);
    }

    #[test]
    fn hls_refused_by_the_meter_is_an_authentication_failure() {
        let mut a = Association::new(ciphered_settings(Authentication::HighGmac), Arc::new(MemoryCounter::new(0)));
        a.aarq().unwrap();
        let pass3 = a.on_aare(&ciphered_aare(5, Some(Mechanism::HlsGmac), Some(hex(STOC)))).unwrap().unwrap();
        let (_, plain) = open_request(&pass3);
        let Apdu::ActionRequest(action) = Apdu::decode(&plain).unwrap() else { panic!() };
        let refused =
            Apdu::ActionResponse(ActionResponse { invoke: action.invoke, result: 3, return_parameters: None }).encode();
        let refused = security::wrap(&keys(), 0x30, &SERVER_TITLE, 6, &refused).unwrap();
        assert!(matches!(a.on_hls_reply(&refused), Err(DlmsError::AuthenticationFailed)));
        // HLS-GMAC without keys cannot even start.
        let mut b = Association::new(
            ClientSettings { authentication: Authentication::HighGmac, ..Default::default() },
            Arc::new(MemoryCounter::new(0)),
        );
        assert!(matches!(b.aarq(), Err(DlmsError::Config(_))));
    }

    #[test]
    fn get_reassembles_three_data_blocks() {
        let mut a = associated();
        let (req, mut pending) = a.get(ENERGY, None).unwrap();
        // GET.request-normal, invoke C1, class 3, 1.0.1.8.0.255, attribute 2, no selective access.
        assert_eq!(req, hex("C001C1 0003 0100010800FF 02 00"));
        // octet-string(10) 00..09 split into 4 + 4 + 4 bytes of raw data.
        let b1 = hex("C402C1 00 00000001 00 04 090A0001");
        let b2 = hex("C402C1 00 00000002 00 04 02030405");
        let b3 = hex("C402C1 01 00000003 00 04 06070809");
        assert_eq!(a.on_response(&mut pending, &b1).unwrap(), Progress::Send(hex("C002C1 00000001")));
        assert_eq!(a.on_response(&mut pending, &b2).unwrap(), Progress::Send(hex("C002C1 00000002")));
        assert_eq!(pending.blocks_received(), 2);
        assert_eq!(
            a.on_response(&mut pending, &b3).unwrap(),
            Progress::Done(Outcome::Data(Data::OctetString((0..10).collect())))
        );
        assert!(matches!(a.on_response(&mut pending, &b3), Err(DlmsError::State(_))));

        // A block out of order.
        let (_, mut pending) = a.get(ENERGY, None).unwrap();
        let inv = pending.invoke_id();
        let first = hex(&format!("C402C{inv:X} 00 00000001 00 04 090A0001"));
        let third = hex(&format!("C402C{inv:X} 00 00000003 00 04 06070809"));
        assert!(matches!(a.on_response(&mut pending, &first), Ok(Progress::Send(_))));
        assert!(matches!(a.on_response(&mut pending, &third), Err(DlmsError::Unexpected(_))));
        // A block with a data access result instead of raw data.
        let (_, mut pending) = a.get(ENERGY, None).unwrap();
        let inv = pending.invoke_id();
        let refused = hex(&format!("C402C{inv:X} 01 00000001 01 0E"));
        assert!(matches!(
            a.on_response(&mut pending, &refused),
            Err(DlmsError::Access(DataAccessResult::DataBlockUnavailable))
        ));
    }

    #[test]
    fn get_by_range_is_the_gurux_encoding() {
        // Gurux 1.0.203 GXDLMSClient.readRowsByRange(profile 1.0.99.1.0.255 with the clock as first capture
        // object, 2021-01-01 01:00 .. 02:00 at UTC+1), the wrapper header removed.
        let mut a = associated();
        let profile = AttributeDescriptor { class_id: 7, instance: [1, 0, 99, 1, 0, 255], attribute: 2 };
        let access = crate::dlms::cosem::range_access(1_609_459_200, 1_609_462_800, Some(-60));
        let (req, _) = a.get(profile, Some(access)).unwrap();
        assert_eq!(
            req,
            hex("C001C100070100630100FF0201010204020412000809060000010000FF0F02120000090C07E50101FF01000000FFC400\
                 090C07E50101FF02000000FFC4000100")
        );
    }

    #[test]
    fn access_errors_exceptions_and_foreign_replies() {
        let mut a = associated();
        let (_, mut pending) = a.get(ENERGY, None).unwrap();
        // get-response-normal, data-access-result 4 object-undefined.
        assert!(matches!(
            a.on_response(&mut pending, &hex("C401C1 01 04")),
            Err(DlmsError::Access(DataAccessResult::ObjectUndefined))
        ));
        let (_, mut pending) = a.get(ENERGY, None).unwrap();
        assert_eq!(pending.invoke_id(), 2);
        // A reply for invoke id 1 (late reply to the earlier request).
        assert!(matches!(
            a.on_response(&mut pending, &hex("C401C1 00 0600000001")),
            Err(DlmsError::InvokeIdMismatch { expected: 2, got: 1 })
        ));
        let (_, mut pending) = a.get(ENERGY, None).unwrap();
        // EXCEPTION-RESPONSE: service-not-allowed, operation-not-possible.
        assert!(matches!(
            a.on_response(&mut pending, &hex("D8 01 01")),
            Err(DlmsError::Exception(ExceptionResponse { state_error: 1, service_error: 1 }))
        ));
        let (_, mut pending) = a.get(ENERGY, None).unwrap();
        assert!(matches!(a.on_response(&mut pending, &hex("C5 01 C4 00")), Err(DlmsError::Unexpected(_))));
        let (_, mut pending) = a.get(ENERGY, None).unwrap();
        assert!(matches!(a.on_response(&mut pending, &hex("C4 01")), Err(DlmsError::Apdu(_))));
    }

    #[test]
    fn set_action_and_get_with_list() {
        let mut a = associated();
        let (req, mut pending) =
            a.set(CLOCK, Data::OctetString(vec![0x07, 0xE5, 1, 1, 5, 0, 0, 0, 0, 0x80, 0, 0])).unwrap();
        assert_eq!(req, hex("C101C1 0008 0000010000FF 02 00 090C07E5010105000000008000 00"));
        assert_eq!(a.on_response(&mut pending, &hex("C501C1 00")).unwrap(), Progress::Done(Outcome::Set));
        let (_, mut pending) = a.set(CLOCK, Data::Null).unwrap();
        assert!(matches!(
            a.on_response(&mut pending, &hex("C501C2 03")),
            Err(DlmsError::Access(DataAccessResult::ReadWriteDenied))
        ));

        let (req, mut pending) = a.action(crate::dlms::cosem::REMOTE_DISCONNECT, Some(Data::Integer(0))).unwrap();
        // ACTION.request-normal, invoke C3, class 70, 0.0.96.3.10.255, method 1, parameters integer(0).
        assert_eq!(req, hex("C301C3 0046 000060030AFF 01 01 0F00"));
        assert_eq!(a.on_response(&mut pending, &hex("C701C3 00 00")).unwrap(), Progress::Done(Outcome::Action(None)));
        let (_, mut pending) = a.action(crate::dlms::cosem::REMOTE_RECONNECT, Some(Data::Integer(0))).unwrap();
        assert!(matches!(a.on_response(&mut pending, &hex("C701C4 03 00")), Err(DlmsError::Action(3))));

        let (req, mut pending) = a.get_list(vec![(ENERGY, None), (CLOCK, None)]).unwrap();
        assert_eq!(req, hex("C003C5 02 0003 0100010800FF 02 00 0008 0000010000FF 02 00"));
        let reply = hex("C403C5 02 00 0600000001 01 04");
        assert_eq!(
            a.on_response(&mut pending, &reply).unwrap(),
            Progress::Done(Outcome::List(vec![
                GetDataResult::Data(Data::DoubleLongUnsigned(1)),
                GetDataResult::Error(DataAccessResult::ObjectUndefined)
            ]))
        );
        // The same list in two data blocks.
        let (_, mut pending) = a.get_list(vec![(ENERGY, None), (CLOCK, None)]).unwrap();
        assert!(matches!(a.on_response(&mut pending, &hex("C402C6 00 00000001 00 03 020006")), Ok(Progress::Send(_))));
        assert_eq!(
            a.on_response(&mut pending, &hex("C402C6 01 00000002 00 06 00000001 0104")).unwrap(),
            Progress::Done(Outcome::List(vec![
                GetDataResult::Data(Data::DoubleLongUnsigned(1)),
                GetDataResult::Error(DataAccessResult::ObjectUndefined)
            ]))
        );
        // Wrong number of results.
        let (_, mut pending) = a.get_list(vec![(ENERGY, None), (CLOCK, None)]).unwrap();
        assert!(matches!(a.on_response(&mut pending, &hex("C403C7 01 00 0600000001")), Err(DlmsError::Unexpected(_))));
    }

    #[test]
    fn ciphered_get_round_trip_with_strictly_increasing_counter() {
        let counter = Arc::new(MemoryCounter::new(1000));
        let mut a = Association::new(ciphered_settings(Authentication::None), counter.clone());
        let aarq = a.aarq().unwrap();
        assert_eq!(a.on_aare(&ciphered_aare(7, None, None)).unwrap(), None);
        assert!(a.is_associated());
        let Apdu::Aarq(aarq) = Apdu::decode(&aarq).unwrap() else { panic!() };
        assert_eq!(aarq.mechanism, None);
        let mut last_ic = open_request(aarq.user_information.as_deref().unwrap()).0;
        let mut server_ic = 7;
        for round in 0..3u32 {
            let (req, mut pending) = a.get(ENERGY, None).unwrap();
            // glo-get-request (200), SC 0x30.
            assert_eq!(req[0], 200);
            let (ic, plain) = open_request(&req);
            assert!(ic > last_ic, "{ic} after {last_ic}");
            last_ic = ic;
            let Apdu::GetRequest(GetRequest::Normal { invoke, attribute, access: None }) =
                Apdu::decode(&plain).unwrap()
            else {
                panic!()
            };
            assert_eq!(attribute, ENERGY);
            server_ic += 1;
            let response = Apdu::GetResponse(GetResponse::Normal {
                invoke,
                result: GetDataResult::Data(Data::DoubleLongUnsigned(42 + round)),
            })
            .encode();
            let sealed = security::wrap(&keys(), 0x30, &SERVER_TITLE, server_ic, &response).unwrap();
            assert_eq!(
                a.on_response(&mut pending, &sealed).unwrap(),
                Progress::Done(Outcome::Data(Data::DoubleLongUnsigned(42 + round)))
            );
        }
        assert_eq!(counter.peek(), u64::from(last_ic) + 1);

        // The same ciphered reply again is a replay.
        let (req, mut pending) = a.get(ENERGY, None).unwrap();
        let Apdu::GetRequest(GetRequest::Normal { invoke, .. }) = Apdu::decode(&open_request(&req).1).unwrap() else {
            panic!()
        };
        let response =
            Apdu::GetResponse(GetResponse::Normal { invoke, result: GetDataResult::Data(Data::Null) }).encode();
        let replayed = security::wrap(&keys(), 0x30, &SERVER_TITLE, server_ic, &response).unwrap();
        assert!(matches!(a.on_response(&mut pending, &replayed), Err(DlmsError::Replay { .. })));
        // A tampered reply fails authentication; a plain reply is refused; a plain exception is taken.
        let (_, mut pending) = a.get(ENERGY, None).unwrap();
        let mut tampered = security::wrap(&keys(), 0x30, &SERVER_TITLE, server_ic + 10, &response).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x55;
        assert!(matches!(
            a.on_response(&mut pending, &tampered),
            Err(DlmsError::Security(SecurityError::AuthenticationFailed))
        ));
        let (_, mut pending) = a.get(ENERGY, None).unwrap();
        assert!(matches!(a.on_response(&mut pending, &response), Err(DlmsError::Unexpected(_))));
        let (_, mut pending) = a.get(ENERGY, None).unwrap();
        assert!(matches!(a.on_response(&mut pending, &hex("D80105")), Err(DlmsError::Exception(_))));

        // The release carries a ciphered InitiateRequest with a fresh counter value.
        let Apdu::Rlrq(rlrq) = Apdu::decode(&a.release().unwrap()).unwrap() else { panic!() };
        assert_eq!(rlrq.reason, Some(0));
        assert!(open_request(rlrq.user_information.as_deref().unwrap()).0 > last_ic);
        a.on_release_response(&hex("6300")).unwrap();
    }

    #[test]
    fn a_failing_counter_sends_nothing() {
        struct Broken;
        impl InvocationCounter for Broken {
            fn next(&self) -> Result<u32, DlmsError> {
                Err(DlmsError::Counter("store is read-only".into()))
            }
        }
        let mut a = Association::new(ciphered_settings(Authentication::None), Arc::new(Broken));
        assert!(matches!(a.aarq(), Err(DlmsError::Counter(_))));
        let c = MemoryCounter::new(u32::MAX);
        assert_eq!(c.next().unwrap(), u32::MAX);
        assert!(matches!(c.next(), Err(DlmsError::Counter(_))));
        assert!(matches!(c.next(), Err(DlmsError::Counter(_))));
    }

    #[test]
    fn hostile_block_sizes_are_bounded() {
        let mut a = associated();
        let (_, mut pending) = a.get(ENERGY, None).unwrap();
        pending.blocks = vec![0; MAX_RESPONSE_LEN - 2];
        pending.last_block = 1;
        let block = Apdu::GetResponse(GetResponse::WithDataBlock {
            invoke: pending.invoke,
            block: DataBlockG { last_block: false, block_number: 2, result: Ok(vec![0; 3]) },
        })
        .encode();
        assert!(matches!(a.on_response(&mut pending, &block), Err(DlmsError::Unexpected(_))));
    }

    proptest::proptest! {
        /// No reply bytes panic the association, in any state, plain or ciphered.
        #[test]
        fn arbitrary_replies_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), cipher in proptest::prelude::any::<bool>()) {
            let settings = if cipher { ciphered_settings(Authentication::HighGmac) } else { ClientSettings::default() };
            let mut a = Association::new(settings, Arc::new(MemoryCounter::new(0)));
            a.aarq().unwrap();
            let _ = a.on_aare(&bytes);
            let _ = a.on_hls_reply(&bytes);
            let mut a = associated();
            let (_, mut pending) = a.get(ENERGY, None).unwrap();
            let _ = a.on_response(&mut pending, &bytes);
            let (_, mut pending) = a.get_list(vec![(ENERGY, None), (CLOCK, None)]).unwrap();
            // A first block that announces more, then the arbitrary bytes as the raw data of the last one.
            let first = hex(&format!("C402C{:X} 00 00000001 00 01 02", pending.invoke_id()));
            let _ = a.on_response(&mut pending, &first);
            let mut last = hex(&format!("C402C{:X} 01 00000002 00", pending.invoke_id()));
            crate::dlms::axdr::encode_length(bytes.len(), &mut last);
            last.extend_from_slice(&bytes);
            let _ = a.on_response(&mut pending, &last);
            let _ = a.on_release_response(&bytes);
        }
    }
}
