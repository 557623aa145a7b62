//! The meter's application layer for one connection, without I/O: ACSE (AARQ/AARE with no authentication,
//! LLS and HLS-GMAC, RLRQ/RLRE; Green Book DLMS UA 1000-2 §9.3 and §9.2.7) and the xDLMS services GET
//! (normal, next, with list), SET and ACTION (IEC 62056-5-3), plain or glo-ciphered (security suite 0).
//!
//! [`AppServer::handle`] takes one complete request APDU (after HDLC reassembly or the wrapper) from the
//! client SAP and returns the reply APDU, if any. Long results are cut into GET data blocks sized by the
//! client's max receive PDU; the load profile is encoded lazily block by block.
//!
//! Ciphered associations (application context LN with ciphering): every xDLMS request must arrive
//! glo-ciphered (or general-glo-ciphered) with the client's system title; its invocation counter must be
//! greater than every one seen before from that system title (per meter, across connections); the reply
//! goes back in the same kind of envelope with the meter's system title and its own increasing counter.
//!
//! Panic contract: no APDU panics anything here; garbage gets an exception response.

use ami_protocols::dlms::apdu::{
    Aare, Aarq, ActionRequest, ActionResponse, Apdu, ApplicationContext, ConfirmedServiceError, Conformance,
    DataAccessResult, DataBlockG, ExceptionResponse, GeneralGloCiphering, GetDataResult, GetRequest, GetResponse,
    InitiateRequest, InitiateResponse, InvokeId, Mechanism, Release, SetRequest, SetResponse, SourceDiagnostic,
    CURRENT_ASSOCIATION,
};
use ami_protocols::dlms::axdr::{encode_length, Data};
use ami_protocols::dlms::security::{self, SystemTitle, SC_AUTHENTICATED_ENCRYPTED};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::objects::{self, action_result, Ctx, Rows, Value};
use super::{DlmsMeter, SAP_HLS, SAP_LLS, SAP_PUBLIC};

/// What the meter supports (and grants of what a client proposes): GET, SET, ACTION, selective access,
/// block transfer with GET, multiple references (GET with list).
const SERVER_CONFORMANCE: u32 = Conformance::GET
    | Conformance::SET
    | Conformance::ACTION
    | Conformance::SELECTIVE_ACCESS
    | Conformance::BLOCK_TRANSFER_WITH_GET
    | Conformance::MULTIPLE_REFERENCES
    | Conformance::PRIORITY_MGMT;

/// Bytes a GET.response-with-datablock adds around its raw data: tag, choice, invoke, last-block, block
/// number (4), raw-data choice, length (up to 3).
const BLOCK_OVERHEAD: usize = 12;
/// Bytes a ciphered envelope adds at most: tag, length (3), general-glo system title (1 + 8), security
/// control, invocation counter (4), GCM tag (12).
const CIPHER_OVERHEAD: usize = 30;
/// Smallest client max receive PDU honoured (smaller proposals are raised to it).
const MIN_PDU: usize = 64;
/// Largest result (GET with list, or a with-list profile) materialised at once.
const MAX_MATERIALISED: usize = 4 << 20;

/// AARE diagnostics (acse-service-user).
mod diagnostic {
    pub(super) const NULL: u8 = 0;
    pub(super) const NO_REASON: u8 = 1;
    pub(super) const CONTEXT_NOT_SUPPORTED: u8 = 2;
    pub(super) const MECHANISM_NOT_RECOGNISED: u8 = 11;
    pub(super) const MECHANISM_REQUIRED: u8 = 12;
    pub(super) const AUTHENTICATION_FAILURE: u8 = 13;
    pub(super) const AUTHENTICATION_REQUIRED: u8 = 14;
}

/// Exception response codes (state-error, service-error).
mod exception {
    pub(super) const SERVICE_NOT_ALLOWED: u8 = 1;
    pub(super) const SERVICE_UNKNOWN: u8 = 2;
    pub(super) const OPERATION_NOT_POSSIBLE: u8 = 1;
    pub(super) const SERVICE_NOT_SUPPORTED: u8 = 2;
    pub(super) const DECIPHERING_ERROR: u8 = 5;
    pub(super) const INVOCATION_COUNTER_ERROR: u8 = 6;
}

/// How a request arrived, so that its reply goes back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Envelope {
    Plain,
    /// Service-specific glo-ciphering with this security control byte.
    Glo(u8),
    /// general-glo-ciphering with this security control byte.
    General(u8),
}

/// One established (or HLS-pending) association.
#[derive(Debug)]
struct Association {
    sap: u16,
    /// False until HLS pass 4 succeeded.
    authenticated: bool,
    /// The client's system title when the context is ciphered.
    client_title: Option<SystemTitle>,
    /// Largest APDU the client receives.
    client_max_pdu: usize,
    conformance: Conformance,
    /// HLS challenges: server to client, client to server.
    stoc: Vec<u8>,
    ctos: Vec<u8>,
}

/// The source of a long GET's raw data.
#[derive(Debug)]
enum Source {
    Bytes(Vec<u8>),
    Rows(Rows),
}

/// A GET whose result is being sent in data blocks.
#[derive(Debug)]
struct LongGet {
    invoke: InvokeId,
    source: Source,
    total: usize,
    /// Bytes sent so far.
    at: usize,
    /// Number of the last block sent.
    block: u32,
    chunk: usize,
}

/// The application layer of one connection (see the module doc).
#[derive(Debug)]
pub(crate) struct AppServer {
    meter: DlmsMeter,
    rng: StdRng,
    association: Option<Association>,
    long_get: Option<LongGet>,
}

impl AppServer {
    /// A server for one connection to `meter`; `seed` drives the HLS challenges.
    pub(crate) fn new(meter: DlmsMeter, seed: u64) -> Self {
        Self { meter, rng: StdRng::seed_from_u64(seed), association: None, long_get: None }
    }

    /// Drops the association (the link was disconnected or reset).
    pub(crate) fn reset(&mut self) {
        self.association = None;
        self.long_get = None;
    }

    /// Answers one request APDU from client `sap`; `None` when nothing is to be sent.
    pub(crate) fn handle(&mut self, sap: u16, apdu: &[u8]) -> Option<Vec<u8>> {
        let decoded = match Apdu::decode(apdu) {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "DLMS simulator: undecodable APDU");
                return Some(self.exception(exception::SERVICE_UNKNOWN, exception::SERVICE_NOT_SUPPORTED));
            }
        };
        match decoded {
            Apdu::Aarq(aarq) => Some(self.aarq(sap, &aarq)),
            Apdu::Rlrq(_) => {
                self.reset();
                Some(Apdu::Rlre(Release { reason: Some(0), user_information: None }).encode())
            }
            Apdu::GloCiphered(_) | Apdu::GeneralGloCiphering(_) => Some(self.ciphered(&decoded)),
            Apdu::GetRequest(_) | Apdu::SetRequest(_) | Apdu::ActionRequest(_) => {
                match &self.association {
                    None => Some(self.exception(exception::SERVICE_NOT_ALLOWED, exception::OPERATION_NOT_POSSIBLE)),
                    // A ciphered association takes ciphered requests only.
                    Some(a) if a.client_title.is_some() => {
                        Some(self.exception(exception::SERVICE_NOT_ALLOWED, exception::OPERATION_NOT_POSSIBLE))
                    }
                    Some(_) => self.service(decoded, Envelope::Plain),
                }
            }
            _ => Some(self.exception(exception::SERVICE_NOT_ALLOWED, exception::SERVICE_NOT_SUPPORTED)),
        }
    }

    fn exception(&self, state_error: u8, service_error: u8) -> Vec<u8> {
        self.meter.count(|s| s.exceptions = s.exceptions.saturating_add(1));
        Apdu::ExceptionResponse(ExceptionResponse { state_error, service_error }).encode()
    }

    // -----------------------------------------------------------------------------------------------------
    // Association
    // -----------------------------------------------------------------------------------------------------

    fn reject(&self, context: ApplicationContext, diag: u8, user_information: Option<Vec<u8>>) -> Vec<u8> {
        Apdu::Aare(Aare {
            application_context: context,
            result: 1,
            diagnostic: SourceDiagnostic::User(diag),
            responding_ap_title: None,
            mechanism: None,
            responding_authentication_value: None,
            user_information,
        })
        .encode()
    }

    fn auth_failure(&self, context: ApplicationContext, diag: u8) -> Vec<u8> {
        self.meter.count(|s| {
            s.auth_failures = s.auth_failures.saturating_add(1);
            s.rejected = s.rejected.saturating_add(1);
        });
        self.reject(context, diag, None)
    }

    fn aarq(&mut self, sap: u16, aarq: &Aarq) -> Vec<u8> {
        self.reset();
        let context = aarq.application_context;
        let ciphered = match context {
            ApplicationContext::LogicalName => false,
            ApplicationContext::LogicalNameCiphered => true,
            ApplicationContext::Other(_) => return self.reject(context, diagnostic::CONTEXT_NOT_SUPPORTED, None),
        };
        let required = match sap {
            SAP_PUBLIC => Mechanism::None,
            SAP_LLS => Mechanism::Lls,
            SAP_HLS => Mechanism::HlsGmac,
            _ => return self.reject(context, diagnostic::NO_REASON, None),
        };
        let mechanism = aarq.mechanism.unwrap_or(Mechanism::None);
        if mechanism != required {
            let diag = if aarq.mechanism.is_none() {
                diagnostic::MECHANISM_REQUIRED
            } else {
                diagnostic::MECHANISM_NOT_RECOGNISED
            };
            return self.auth_failure(context, diag);
        }
        if required == Mechanism::HlsGmac && !ciphered {
            return self.reject(context, diagnostic::CONTEXT_NOT_SUPPORTED, None);
        }
        let spec = self.meter.spec();
        if required == Mechanism::Lls && aarq.calling_authentication_value.as_deref() != Some(spec.password.as_slice())
        {
            return self.auth_failure(context, diagnostic::AUTHENTICATION_FAILURE);
        }
        let ctos = aarq.calling_authentication_value.clone().unwrap_or_default();
        if required == Mechanism::HlsGmac && !(8..=64).contains(&ctos.len()) {
            return self.auth_failure(context, diagnostic::AUTHENTICATION_FAILURE);
        }
        let client_title = if ciphered {
            match aarq.calling_ap_title.as_deref().and_then(|t| SystemTitle::try_from(t).ok()) {
                Some(t) => Some(t),
                None => return self.reject(context, diagnostic::NO_REASON, None),
            }
        } else {
            None
        };
        // The xDLMS InitiateRequest, deciphered when the context is ciphered.
        let Some(ui) = &aarq.user_information else {
            return self.reject(context, diagnostic::NO_REASON, None);
        };
        let (initiate, security_control) = match client_title {
            Some(title) => match self.open_envelope(title, ui) {
                Ok((plain, sc)) => (plain, sc),
                Err(_) => return self.reject(context, diagnostic::AUTHENTICATION_FAILURE, None),
            },
            None => (ui.clone(), SC_AUTHENTICATED_ENCRYPTED),
        };
        let Ok(request) = InitiateRequest::decode(&initiate) else {
            return self.reject(context, diagnostic::NO_REASON, None);
        };
        if request.proposed_dlms_version < 6 {
            // ConfirmedServiceError: initiateError, initiate, dlms-version-too-low.
            let error = Apdu::ConfirmedServiceError(ConfirmedServiceError { service: 1, class: 6, value: 1 }).encode();
            return self.reject(context, diagnostic::NO_REASON, Some(error));
        }
        let conformance = Conformance(request.proposed_conformance.0 & SERVER_CONFORMANCE);
        let client_max_pdu = match request.client_max_receive_pdu_size {
            0 => usize::from(u16::MAX),
            n => usize::from(n).max(MIN_PDU),
        };
        let response = InitiateResponse {
            negotiated_quality_of_service: None,
            negotiated_dlms_version: 6,
            negotiated_conformance: conformance,
            server_max_receive_pdu_size: spec.max_pdu,
            vaa_name: 0x0007,
        }
        .encode();
        let user_information = if ciphered {
            let ic = self.meter.next_server_ic();
            match security::wrap(&spec.keys, security_control, &spec.system_title, ic, &response) {
                Ok(u) => u,
                Err(_) => return self.reject(context, diagnostic::NO_REASON, None),
            }
        } else {
            response
        };
        let hls = required == Mechanism::HlsGmac;
        let stoc = if hls {
            let mut challenge = vec![0u8; 16];
            self.rng.fill_bytes(&mut challenge);
            challenge
        } else {
            Vec::new()
        };
        let aare = Aare {
            application_context: context,
            result: 0,
            diagnostic: SourceDiagnostic::User(if hls {
                diagnostic::AUTHENTICATION_REQUIRED
            } else {
                diagnostic::NULL
            }),
            responding_ap_title: ciphered.then(|| spec.system_title.to_vec()),
            mechanism: (required != Mechanism::None).then_some(required),
            responding_authentication_value: hls.then(|| stoc.clone()),
            user_information: Some(user_information),
        };
        self.association =
            Some(Association { sap, authenticated: !hls, client_title, client_max_pdu, conformance, stoc, ctos });
        if !hls {
            self.meter.count(|s| s.associations = s.associations.saturating_add(1));
        }
        Apdu::Aare(aare).encode()
    }

    /// Deciphers a glo-ciphered or general-glo-ciphered APDU from `title` and checks its invocation
    /// counter; returns the plain APDU and the security control byte. Refusals are counted here; the
    /// service error to answer with (deciphering-error or invocation-counter-error) is returned.
    fn open_envelope(&self, title: SystemTitle, bytes: &[u8]) -> Result<(Vec<u8>, u8), u8> {
        let envelope = Apdu::decode(bytes).map_err(|_| self.deciphering_error())?;
        self.open(title, &envelope)
    }

    fn open(&self, title: SystemTitle, envelope: &Apdu) -> Result<(Vec<u8>, u8), u8> {
        let sc = match envelope {
            Apdu::GloCiphered(g) => g.security_control,
            Apdu::GeneralGloCiphering(g) => g.security_control,
            _ => return Err(self.deciphering_error()),
        };
        let (ic, plain) =
            security::unwrap(&self.meter.spec().keys, &title, envelope).map_err(|_| self.deciphering_error())?;
        if !self.meter.accept_client_ic(title, ic) {
            self.meter.count(|s| {
                s.replayed_counters = s.replayed_counters.saturating_add(1);
                s.rejected = s.rejected.saturating_add(1);
            });
            return Err(exception::INVOCATION_COUNTER_ERROR);
        }
        Ok((plain, sc))
    }

    fn deciphering_error(&self) -> u8 {
        self.meter.count(|s| {
            s.deciphering_errors = s.deciphering_errors.saturating_add(1);
            s.rejected = s.rejected.saturating_add(1);
        });
        exception::DECIPHERING_ERROR
    }

    fn ciphered(&mut self, envelope: &Apdu) -> Vec<u8> {
        let Some(title) = self.association.as_ref().and_then(|a| a.client_title) else {
            return self.exception(exception::SERVICE_NOT_ALLOWED, exception::OPERATION_NOT_POSSIBLE);
        };
        let (plain, sc) = match self.open(title, envelope) {
            Ok(p) => p,
            Err(service_error) => return self.exception(exception::SERVICE_NOT_ALLOWED, service_error),
        };
        let kind =
            if matches!(envelope, Apdu::GeneralGloCiphering(_)) { Envelope::General(sc) } else { Envelope::Glo(sc) };
        match Apdu::decode(&plain) {
            Ok(request @ (Apdu::GetRequest(_) | Apdu::SetRequest(_) | Apdu::ActionRequest(_))) => {
                self.service(request, kind).unwrap_or_default()
            }
            _ => self.exception(exception::SERVICE_UNKNOWN, exception::SERVICE_NOT_SUPPORTED),
        }
    }

    /// Puts a plain reply APDU into the envelope the request came in.
    fn seal(&self, envelope: Envelope, plain: Vec<u8>) -> Vec<u8> {
        let spec = self.meter.spec();
        match envelope {
            Envelope::Plain => plain,
            Envelope::Glo(sc) => {
                let ic = self.meter.next_server_ic();
                security::wrap(&spec.keys, sc, &spec.system_title, ic, &plain).unwrap_or_default()
            }
            Envelope::General(sc) => {
                let ic = self.meter.next_server_ic();
                match security::protect(&spec.keys, sc, &spec.system_title, ic, &plain) {
                    Ok(payload) => Apdu::GeneralGloCiphering(GeneralGloCiphering {
                        system_title: spec.system_title.to_vec(),
                        security_control: sc,
                        invocation_counter: ic,
                        payload,
                    })
                    .encode(),
                    Err(_) => Vec::new(),
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------------------
    // Services
    // -----------------------------------------------------------------------------------------------------

    fn service(&mut self, request: Apdu, envelope: Envelope) -> Option<Vec<u8>> {
        let association = self.association.as_ref()?;
        let (sap, authenticated) = (association.sap, association.authenticated);
        let max_pdu = association.client_max_pdu;
        let conformance = association.conformance;
        let overhead = if envelope == Envelope::Plain { 0 } else { CIPHER_OVERHEAD };
        let now = self.meter.now();
        self.meter.count(|s| s.requests = s.requests.saturating_add(1));
        let plain = match request {
            Apdu::GetRequest(GetRequest::Normal { invoke, attribute, access }) => {
                self.long_get = None;
                if !authenticated {
                    get_error(invoke, DataAccessResult::ReadWriteDenied)
                } else {
                    let ctx = Ctx { meter: &self.meter, now, client_sap: sap };
                    match objects::get(
                        &ctx,
                        attribute.class_id,
                        &attribute.instance,
                        attribute.attribute,
                        access.as_ref(),
                    ) {
                        Err(e) => get_error(invoke, e),
                        Ok(value) => self.respond_value(invoke, value, max_pdu, overhead, conformance),
                    }
                }
            }
            Apdu::GetRequest(GetRequest::Next { invoke, block }) => self.next_block(invoke, block),
            Apdu::GetRequest(GetRequest::WithList { invoke, items }) => {
                self.long_get = None;
                let ctx = Ctx { meter: &self.meter, now, client_sap: sap };
                let mut raw = Vec::new();
                encode_length(items.len(), &mut raw);
                for (attribute, access) in &items {
                    let result = if authenticated {
                        objects::get(
                            &ctx,
                            attribute.class_id,
                            &attribute.instance,
                            attribute.attribute,
                            access.as_ref(),
                        )
                    } else {
                        Err(DataAccessResult::ReadWriteDenied)
                    };
                    match result {
                        Ok(value) if value.encoded_len(&self.meter) + raw.len() <= MAX_MATERIALISED => {
                            raw.push(0);
                            raw.extend(value.encode(&self.meter));
                        }
                        Ok(_) => raw.extend_from_slice(&[1, DataAccessResult::OtherReason.to_u8()]),
                        Err(e) => raw.extend_from_slice(&[1, e.to_u8()]),
                    }
                }
                if 3 + raw.len() + overhead <= max_pdu {
                    let mut out = vec![196, 3, invoke.0];
                    out.extend(raw);
                    out
                } else {
                    self.start_long_get(invoke, Source::Bytes(raw), max_pdu, overhead, conformance)
                }
            }
            Apdu::SetRequest(request) => {
                self.long_get = None;
                let ctx = Ctx { meter: &self.meter, now, client_sap: sap };
                let (invoke, result) = match request {
                    SetRequest::Normal { invoke, attribute, value, .. } if authenticated => (
                        invoke,
                        objects::set(&ctx, attribute.class_id, &attribute.instance, attribute.attribute, &value),
                    ),
                    SetRequest::Normal { invoke, .. } => (invoke, DataAccessResult::ReadWriteDenied),
                    // Long SETs are not supported (no attribute of this meter needs one).
                    SetRequest::WithFirstDataBlock { invoke, .. } | SetRequest::WithDataBlock { invoke, .. } => {
                        (invoke, DataAccessResult::OtherReason)
                    }
                };
                Apdu::SetResponse(SetResponse::Normal { invoke, result }).encode()
            }
            Apdu::ActionRequest(request) => {
                self.long_get = None;
                self.action(&request, now)
            }
            _ => return None,
        };
        Some(self.seal(envelope, plain))
    }

    fn action(&mut self, request: &ActionRequest, now: i64) -> Vec<u8> {
        let m = &request.method;
        let (result, data) = if m.class_id == 15 && m.instance == CURRENT_ASSOCIATION && m.method == 1 {
            self.hls_pass3(request.parameters.as_ref())
        } else if !self.association.as_ref().is_some_and(|a| a.authenticated) {
            (action_result::READ_WRITE_DENIED, None)
        } else {
            let sap = self.association.as_ref().map_or(0, |a| a.sap);
            let ctx = Ctx { meter: &self.meter, now, client_sap: sap };
            objects::action(&ctx, m.class_id, &m.instance, m.method)
        };
        Apdu::ActionResponse(ActionResponse {
            invoke: request.invoke,
            result,
            return_parameters: data.map(GetDataResult::Data),
        })
        .encode()
    }

    /// HLS pass 3 (the client's f(StoC)) and pass 4 (the meter's f(CtoS) in the reply).
    fn hls_pass3(&mut self, parameters: Option<&Data>) -> (u8, Option<Data>) {
        let spec = self.meter.spec();
        let Some(association) = self.association.as_mut() else {
            return (action_result::READ_WRITE_DENIED, None);
        };
        let (Some(title), false) = (association.client_title, association.stoc.is_empty()) else {
            return (action_result::READ_WRITE_DENIED, None);
        };
        let Some(Data::OctetString(response)) = parameters else {
            return (action_result::READ_WRITE_DENIED, None);
        };
        // The IC inside f(StoC) is not checked against the counter: the client takes it before the one of
        // the envelope that carries it, and the fresh challenge already prevents a replay.
        if security::verify_hls_gmac(&spec.keys, &title, &association.stoc, response).is_err() {
            self.meter.count(|s| {
                s.auth_failures = s.auth_failures.saturating_add(1);
                s.rejected = s.rejected.saturating_add(1);
            });
            return (action_result::READ_WRITE_DENIED, None);
        }
        let first = !association.authenticated;
        association.authenticated = true;
        let ctos = association.ctos.clone();
        if first {
            self.meter.count(|s| s.associations = s.associations.saturating_add(1));
        }
        let ic = self.meter.next_server_ic();
        let f_ctos = security::hls_gmac(&spec.keys, &spec.system_title, ic, &ctos);
        (action_result::SUCCESS, Some(Data::OctetString(f_ctos)))
    }

    /// A GET.response-normal with `value`, or the first data block when it does not fit the client's PDU.
    fn respond_value(
        &mut self,
        invoke: InvokeId,
        value: Value,
        max_pdu: usize,
        overhead: usize,
        conformance: Conformance,
    ) -> Vec<u8> {
        let len = value.encoded_len(&self.meter);
        if 4 + len + overhead <= max_pdu {
            let mut out = vec![196, 1, invoke.0, 0];
            out.extend(value.encode(&self.meter));
            return out;
        }
        let source = match value {
            Value::Data(d) => Source::Bytes(d.to_bytes()),
            Value::Rows(r) => Source::Rows(r),
        };
        self.start_long_get(invoke, source, max_pdu, overhead, conformance)
    }

    fn start_long_get(
        &mut self,
        invoke: InvokeId,
        source: Source,
        max_pdu: usize,
        overhead: usize,
        conformance: Conformance,
    ) -> Vec<u8> {
        if !conformance.has(Conformance::BLOCK_TRANSFER_WITH_GET) {
            return get_error(invoke, DataAccessResult::OtherReason);
        }
        let total = match &source {
            Source::Bytes(b) => b.len(),
            Source::Rows(r) => r.encoded_len(&self.meter),
        };
        let chunk = max_pdu.saturating_sub(BLOCK_OVERHEAD + overhead).max(16);
        self.long_get = Some(LongGet { invoke, source, total, at: 0, block: 0, chunk });
        self.emit_block()
    }

    /// The next block of the long GET in progress.
    fn emit_block(&mut self) -> Vec<u8> {
        let Some(long) = self.long_get.as_mut() else {
            return Vec::new();
        };
        let end = long.at.saturating_add(long.chunk).min(long.total);
        let raw = match &long.source {
            Source::Bytes(b) => b.get(long.at..end).unwrap_or_default().to_vec(),
            Source::Rows(r) => r.encoded_range(&self.meter, long.at, end),
        };
        long.at = end;
        long.block = long.block.saturating_add(1);
        let last_block = long.at >= long.total;
        let reply = Apdu::GetResponse(GetResponse::WithDataBlock {
            invoke: long.invoke,
            block: DataBlockG { last_block, block_number: long.block, result: Ok(raw) },
        })
        .encode();
        if last_block {
            self.long_get = None;
        }
        self.meter.count(|s| s.blocks_sent = s.blocks_sent.saturating_add(1));
        reply
    }

    fn next_block(&mut self, invoke: InvokeId, block: u32) -> Vec<u8> {
        let error = |result, block_number| {
            Apdu::GetResponse(GetResponse::WithDataBlock {
                invoke,
                block: DataBlockG { last_block: true, block_number, result: Err(result) },
            })
            .encode()
        };
        match &self.long_get {
            None => error(DataAccessResult::NoLongGetInProgress, block),
            Some(long) if long.block != block => {
                let expected = long.block;
                self.long_get = None;
                error(DataAccessResult::DataBlockNumberInvalid, expected)
            }
            Some(_) => self.emit_block(),
        }
    }
}

fn get_error(invoke: InvokeId, e: DataAccessResult) -> Vec<u8> {
    Apdu::GetResponse(GetResponse::Normal { invoke, result: GetDataResult::Error(e) }).encode()
}

#[cfg(test)]
mod tests {
    use super::super::DlmsMeterSpec;
    use super::*;
    use ami_protocols::dlms::apdu::{AttributeDescriptor, GloCiphered, MethodDescriptor};

    const CLIENT_TITLE: SystemTitle = *b"TESTCLNT";

    fn initiate(max_pdu: u16) -> Vec<u8> {
        InitiateRequest {
            dedicated_key: None,
            response_allowed: true,
            proposed_quality_of_service: None,
            proposed_dlms_version: 6,
            proposed_conformance: Conformance(0x00_7E_1F),
            client_max_receive_pdu_size: max_pdu,
        }
        .encode()
    }

    fn aarq(mechanism: Option<Mechanism>, secret: Option<&[u8]>, ui: Vec<u8>, ciphered: bool) -> Vec<u8> {
        Apdu::Aarq(Aarq {
            application_context: if ciphered {
                ApplicationContext::LogicalNameCiphered
            } else {
                ApplicationContext::LogicalName
            },
            calling_ap_title: ciphered.then(|| CLIENT_TITLE.to_vec()),
            mechanism,
            calling_authentication_value: secret.map(<[u8]>::to_vec),
            user_information: Some(ui),
        })
        .encode()
    }

    fn aare(bytes: &[u8]) -> Aare {
        match Apdu::decode(bytes) {
            Ok(Apdu::Aare(a)) => a,
            other => panic!("not an AARE: {other:?}"),
        }
    }

    fn get_clock(invoke: u8) -> Vec<u8> {
        Apdu::GetRequest(GetRequest::Normal {
            invoke: InvokeId::confirmed(invoke),
            attribute: AttributeDescriptor { class_id: 8, instance: [0, 0, 1, 0, 0, 255], attribute: 2 },
            access: None,
        })
        .encode()
    }

    #[test]
    fn lls_accepts_the_password_and_refuses_another() {
        let meter = DlmsMeter::new(DlmsMeterSpec::default());
        let mut server = AppServer::new(meter.clone(), 1);
        let bad =
            aare(&server.handle(SAP_LLS, &aarq(Some(Mechanism::Lls), Some(b"wrong"), initiate(512), false)).unwrap());
        assert_eq!((bad.result, bad.diagnostic), (1, SourceDiagnostic::User(13)));
        assert!(matches!(
            Apdu::decode(&server.handle(SAP_LLS, &get_clock(1)).unwrap()),
            Ok(Apdu::ExceptionResponse(_))
        ));
        let good = aare(
            &server.handle(SAP_LLS, &aarq(Some(Mechanism::Lls), Some(b"00000000"), initiate(512), false)).unwrap(),
        );
        assert_eq!((good.result, good.diagnostic), (0, SourceDiagnostic::User(0)));
        let reply = server.handle(SAP_LLS, &get_clock(1)).unwrap();
        assert!(matches!(
            Apdu::decode(&reply),
            Ok(Apdu::GetResponse(GetResponse::Normal { result: GetDataResult::Data(_), .. }))
        ));
        let stats = meter.stats();
        assert_eq!((stats.associations, stats.auth_failures, stats.rejected), (1, 1, 1));
    }

    #[test]
    fn public_client_cannot_use_a_password_and_cannot_write() {
        let meter = DlmsMeter::new(DlmsMeterSpec::default());
        let mut server = AppServer::new(meter.clone(), 1);
        let a = aare(
            &server.handle(SAP_PUBLIC, &aarq(Some(Mechanism::Lls), Some(b"00000000"), initiate(512), false)).unwrap(),
        );
        assert_eq!(a.result, 1);
        let a = aare(&server.handle(SAP_PUBLIC, &aarq(None, None, initiate(512), false)).unwrap());
        assert_eq!(a.result, 0);
        let action = Apdu::ActionRequest(ActionRequest {
            invoke: InvokeId::confirmed(2),
            method: MethodDescriptor { class_id: 70, instance: [0, 0, 96, 3, 10, 255], method: 1 },
            parameters: Some(Data::Integer(0)),
        })
        .encode();
        let reply = server.handle(SAP_PUBLIC, &action).unwrap();
        assert!(matches!(Apdu::decode(&reply), Ok(Apdu::ActionResponse(ActionResponse { result: 3, .. }))));
        assert!(meter.relay_connected());
    }

    #[test]
    fn hls_gmac_association_with_ciphered_services_and_replay_protection() {
        let meter = DlmsMeter::new(DlmsMeterSpec::default());
        let keys = meter.spec().keys.clone();
        let server_title = meter.spec().system_title;
        let mut server = AppServer::new(meter.clone(), 7);
        let ctos = b"0123456789ABCDEF";
        let ui = security::wrap(&keys, 0x30, &CLIENT_TITLE, 10, &initiate(256)).unwrap();
        let a = aare(&server.handle(SAP_HLS, &aarq(Some(Mechanism::HlsGmac), Some(ctos), ui, true)).unwrap());
        assert_eq!((a.result, a.diagnostic), (0, SourceDiagnostic::User(14)));
        assert_eq!(a.responding_ap_title.as_deref(), Some(server_title.as_slice()));
        let stoc = a.responding_authentication_value.unwrap();
        let envelope = Apdu::decode(&a.user_information.unwrap()).unwrap();
        let (_, plain) = security::unwrap(&keys, &server_title, &envelope).unwrap();
        assert!(InitiateResponse::decode(&plain).is_ok());
        // Before pass 3 nothing is readable.
        let early = security::wrap(&keys, 0x30, &CLIENT_TITLE, 11, &get_clock(1)).unwrap();
        let reply = server.handle(SAP_HLS, &early).unwrap();
        let (_, plain) = security::unwrap(&keys, &server_title, &Apdu::decode(&reply).unwrap()).unwrap();
        assert!(matches!(
            Apdu::decode(&plain),
            Ok(Apdu::GetResponse(GetResponse::Normal {
                result: GetDataResult::Error(DataAccessResult::ReadWriteDenied),
                ..
            }))
        ));
        // Pass 3 with f(StoC), pass 4 checked.
        let f_stoc = security::hls_gmac(&keys, &CLIENT_TITLE, 12, &stoc);
        let pass3 = Apdu::ActionRequest(ActionRequest {
            invoke: InvokeId::confirmed(2),
            method: MethodDescriptor { class_id: 15, instance: CURRENT_ASSOCIATION, method: 1 },
            parameters: Some(Data::OctetString(f_stoc)),
        })
        .encode();
        let reply = server.handle(SAP_HLS, &security::wrap(&keys, 0x30, &CLIENT_TITLE, 13, &pass3).unwrap()).unwrap();
        let (_, plain) = security::unwrap(&keys, &server_title, &Apdu::decode(&reply).unwrap()).unwrap();
        let Ok(Apdu::ActionResponse(ActionResponse {
            result: 0,
            return_parameters: Some(GetDataResult::Data(Data::OctetString(f_ctos))),
            ..
        })) = Apdu::decode(&plain)
        else {
            panic!("pass 4 missing: {plain:02X?}");
        };
        security::verify_hls_gmac(&keys, &server_title, ctos, &f_ctos).unwrap();
        // A ciphered GET works; the same counter again is refused; a plain GET is refused.
        let get = security::wrap(&keys, 0x30, &CLIENT_TITLE, 14, &get_clock(3)).unwrap();
        let reply = server.handle(SAP_HLS, &get).unwrap();
        assert!(matches!(Apdu::decode(&reply), Ok(Apdu::GloCiphered(GloCiphered { tag: 204, .. }))));
        let replay = server.handle(SAP_HLS, &get).unwrap();
        assert_eq!(
            Apdu::decode(&replay),
            Ok(Apdu::ExceptionResponse(ExceptionResponse { state_error: 1, service_error: 6 }))
        );
        let mut tampered = security::wrap(&keys, 0x30, &CLIENT_TITLE, 15, &get_clock(4)).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            Apdu::decode(&server.handle(SAP_HLS, &tampered).unwrap()),
            Ok(Apdu::ExceptionResponse(ExceptionResponse { state_error: 1, service_error: 5 }))
        );
        assert!(matches!(
            Apdu::decode(&server.handle(SAP_HLS, &get_clock(5)).unwrap()),
            Ok(Apdu::ExceptionResponse(_))
        ));
        let stats = meter.stats();
        assert_eq!((stats.associations, stats.replayed_counters, stats.deciphering_errors), (1, 1, 1));
    }

    #[test]
    fn general_glo_ciphering_is_answered_in_kind_and_a_bad_initiate_is_an_authentication_failure() {
        let meter = DlmsMeter::new(DlmsMeterSpec::default());
        let keys = meter.spec().keys.clone();
        let server_title = meter.spec().system_title;
        let mut server = AppServer::new(meter.clone(), 3);
        // An InitiateRequest ciphered with another key: refused, counted, no exception response.
        let other = ami_protocols::dlms::security::Keys { block_cipher_key: [9; 16], ..keys.clone() };
        let ui = security::wrap(&other, 0x30, &CLIENT_TITLE, 1, &initiate(256)).unwrap();
        let a = aare(&server.handle(SAP_HLS, &aarq(Some(Mechanism::HlsGmac), Some(b"CHALLENGE"), ui, true)).unwrap());
        assert_eq!((a.result, a.diagnostic), (1, SourceDiagnostic::User(13)));
        assert_eq!((meter.stats().deciphering_errors, meter.stats().exceptions), (1, 0));
        // LLS with ciphering (SAP 0x20 may cipher too), then a general-glo-ciphering GET.
        let ui = security::wrap(&keys, 0x30, &CLIENT_TITLE, 2, &initiate(256)).unwrap();
        let a = aare(&server.handle(SAP_LLS, &aarq(Some(Mechanism::Lls), Some(b"00000000"), ui, true)).unwrap());
        assert_eq!(a.result, 0);
        let payload = security::protect(&keys, 0x30, &CLIENT_TITLE, 3, &get_clock(1)).unwrap();
        let request = Apdu::GeneralGloCiphering(GeneralGloCiphering {
            system_title: CLIENT_TITLE.to_vec(),
            security_control: 0x30,
            invocation_counter: 3,
            payload,
        })
        .encode();
        let reply = Apdu::decode(&server.handle(SAP_LLS, &request).unwrap()).unwrap();
        let Apdu::GeneralGloCiphering(g) = &reply else { panic!("{reply:?}") };
        assert_eq!(g.system_title, server_title.to_vec());
        let (_, plain) = security::unwrap(&keys, &server_title, &reply).unwrap();
        assert!(matches!(
            Apdu::decode(&plain),
            Ok(Apdu::GetResponse(GetResponse::Normal { result: GetDataResult::Data(Data::OctetString(_)), .. }))
        ));
    }

    #[test]
    fn wrong_f_stoc_is_refused() {
        let meter = DlmsMeter::new(DlmsMeterSpec::default());
        let keys = meter.spec().keys.clone();
        let mut server = AppServer::new(meter.clone(), 7);
        let ui = security::wrap(&keys, 0x30, &CLIENT_TITLE, 1, &initiate(256)).unwrap();
        let a = aare(&server.handle(SAP_HLS, &aarq(Some(Mechanism::HlsGmac), Some(b"CHALLENGE"), ui, true)).unwrap());
        let stoc = a.responding_authentication_value.unwrap();
        let wrong = ami_protocols::dlms::security::Keys { authentication_key: [0; 16], ..keys.clone() };
        let f_stoc = security::hls_gmac(&wrong, &CLIENT_TITLE, 2, &stoc);
        let pass3 = Apdu::ActionRequest(ActionRequest {
            invoke: InvokeId::confirmed(2),
            method: MethodDescriptor { class_id: 15, instance: CURRENT_ASSOCIATION, method: 1 },
            parameters: Some(Data::OctetString(f_stoc)),
        })
        .encode();
        let reply = server.handle(SAP_HLS, &security::wrap(&keys, 0x30, &CLIENT_TITLE, 3, &pass3).unwrap()).unwrap();
        let (_, plain) = security::unwrap(&keys, &meter.spec().system_title, &Apdu::decode(&reply).unwrap()).unwrap();
        assert!(matches!(Apdu::decode(&plain), Ok(Apdu::ActionResponse(ActionResponse { result: 3, .. }))));
        assert_eq!((meter.stats().associations, meter.stats().auth_failures), (0, 1));
    }

    #[test]
    fn long_results_come_in_blocks_within_the_client_pdu() {
        let meter = DlmsMeter::new(DlmsMeterSpec { history_days: 2, ..DlmsMeterSpec::default() });
        let mut server = AppServer::new(meter.clone(), 1);
        let a = aare(&server.handle(SAP_PUBLIC, &aarq(None, None, initiate(200), false)).unwrap());
        assert_eq!(a.result, 0);
        let request = Apdu::GetRequest(GetRequest::Normal {
            invoke: InvokeId::confirmed(1),
            attribute: AttributeDescriptor { class_id: 7, instance: objects::LOAD_PROFILE, attribute: 2 },
            access: None,
        })
        .encode();
        let mut reply = server.handle(SAP_PUBLIC, &request).unwrap();
        let mut raw = Vec::new();
        let mut blocks = 0;
        loop {
            assert!(reply.len() <= 200, "{} bytes", reply.len());
            let Ok(Apdu::GetResponse(GetResponse::WithDataBlock { block, .. })) = Apdu::decode(&reply) else {
                panic!("not a block: {reply:02X?}");
            };
            blocks += 1;
            assert_eq!(block.block_number, blocks);
            raw.extend(block.result.unwrap());
            if block.last_block {
                break;
            }
            let next = Apdu::GetRequest(GetRequest::Next { invoke: InvokeId::confirmed(1), block: blocks }).encode();
            reply = server.handle(SAP_PUBLIC, &next).unwrap();
        }
        let (Data::Array(rows), used) = Data::decode(&raw).unwrap() else { panic!() };
        assert_eq!((rows.len(), used), (192, raw.len()));
        assert!(blocks > 10);
        assert_eq!(meter.stats().blocks_sent, u64::from(blocks));
        // A get-next without a long GET in progress.
        let next = Apdu::GetRequest(GetRequest::Next { invoke: InvokeId::confirmed(1), block: 1 }).encode();
        let reply = server.handle(SAP_PUBLIC, &next).unwrap();
        assert!(matches!(
            Apdu::decode(&reply),
            Ok(Apdu::GetResponse(GetResponse::WithDataBlock {
                block: DataBlockG { result: Err(DataAccessResult::NoLongGetInProgress), .. },
                ..
            }))
        ));
    }

    #[test]
    fn garbage_gets_an_exception_and_never_panics() {
        let meter = DlmsMeter::new(DlmsMeterSpec::default());
        let mut server = AppServer::new(meter.clone(), 1);
        let mut rng = StdRng::seed_from_u64(99);
        for i in 0..3000 {
            let len = (rng.next_u32() % 64) as usize;
            let mut bytes = vec![0u8; len];
            rng.fill_bytes(&mut bytes);
            if let Some(first) = bytes.first_mut() {
                // Bias towards real tags so that the decoders' inner paths are reached.
                *first = [0x60, 0x62, 192, 193, 195, 200, 219, 33][i % 8];
            }
            let _ = server.handle([SAP_PUBLIC, SAP_LLS, SAP_HLS][i % 3], &bytes);
        }
        assert!(meter.stats().exceptions > 0);
    }
}
