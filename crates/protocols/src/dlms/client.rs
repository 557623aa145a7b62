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
    /// Security control byte of the client's APDUs. Default `0x30` (authenticated and encrypted).
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
        match &self.settings.ciphering {
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
        match (&decoded, &self.settings.ciphering) {
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
            application_context: if ciphering.is_some() {
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
            let title =
                aare.responding_ap_title.as_deref().and_then(|t| SystemTitle::try_from(t).ok()).ok_or_else(|| {
                    DlmsError::Unexpected("AARE of a ciphered association without an 8-byte system title".into())
                })?;
            self.server_title = Some(title);
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
        let user_information = if self.settings.ciphering.is_some() && self.server_title.is_some() {
            Some(self.user_information()?)
        } else {
            None
        };
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
