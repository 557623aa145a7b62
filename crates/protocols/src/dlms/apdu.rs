//! xDLMS and ACSE APDUs (IEC 62056-5-3 / Green Book DLMS UA 1000-2 §9.3 and §9.5): the association
//! (AARQ/AARE, BER-encoded), its release (RLRQ/RLRE), the xDLMS InitiateRequest/InitiateResponse carried in
//! their user-information, the LN-referencing services GET / SET / ACTION (normal, with list, with data
//! blocks, with selective access), exception and confirmed-service-error responses, and the glo-ciphered
//! envelopes of security suite 0 (the envelope only: encryption is [`super::security`]).
//!
//! Both directions are encoded and decoded: the client ([`super::client`]) encodes requests and decodes
//! responses, the simulated meter (`ami-sim`) the other way round, and `amid decode` decodes either.
//!
//! Panic contract: [`Apdu::decode`] never panics on any byte sequence and never allocates more than the
//! input could hold; failures are [`ApduError`]s. [`Apdu::encode`] never panics.

use super::axdr::{decode_length, encode_length, AxdrError, Data};

/// A COSEM logical name (OBIS code) as it travels: 6 bytes `A B C D E F`.
pub type LogicalName = [u8; 6];

/// The current association's object (class 15, `0.0.40.0.0.255`): HLS-GMAC's second pass is its method 1.
pub const CURRENT_ASSOCIATION: LogicalName = [0, 0, 40, 0, 0, 255];

/// COSEM attribute descriptor: class id, logical name, attribute index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttributeDescriptor {
    /// Interface class (1 Data, 3 Register, 7 Profile generic, 8 Clock, …).
    pub class_id: u16,
    /// Logical name of the object.
    pub instance: LogicalName,
    /// Attribute index (1 = logical name, 2 = value/buffer, …).
    pub attribute: i8,
}

/// COSEM method descriptor: class id, logical name, method index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MethodDescriptor {
    /// Interface class.
    pub class_id: u16,
    /// Logical name of the object.
    pub instance: LogicalName,
    /// Method index (1-based).
    pub method: i8,
}

/// Selective access: an access selector and its parameters (class 7: 1 = by range, 2 = by entry).
#[derive(Debug, Clone, PartialEq)]
pub struct SelectiveAccess {
    /// The access selector.
    pub selector: u8,
    /// The access parameters (for selector 1 a structure of restricting object, from, to, selected columns).
    pub parameters: Data,
}

/// Invoke-id-and-priority byte: bits 0..3 invoke id, bit 6 service class (1 = confirmed), bit 7 priority
/// (1 = high). Kept as the raw byte so decoding is lossless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InvokeId(pub u8);

impl InvokeId {
    /// Confirmed, high priority, invoke id `id & 0x0F`: what clients usually send (`0xC1` for id 1).
    pub fn confirmed(id: u8) -> InvokeId {
        InvokeId(0xC0 | (id & 0x0F))
    }

    /// The invoke id (0..=15).
    pub fn id(self) -> u8 {
        self.0 & 0x0F
    }
}

/// Data-Access-Result (Blue Book enum); `Success` is 0. Unknown values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataAccessResult {
    /// 0
    Success,
    /// 1
    HardwareFault,
    /// 2
    TemporaryFailure,
    /// 3
    ReadWriteDenied,
    /// 4
    ObjectUndefined,
    /// 9
    ObjectClassInconsistent,
    /// 11
    ObjectUnavailable,
    /// 12
    TypeUnmatched,
    /// 13
    ScopeOfAccessViolated,
    /// 14
    DataBlockUnavailable,
    /// 15
    LongGetAborted,
    /// 16
    NoLongGetInProgress,
    /// 17
    LongSetAborted,
    /// 18
    NoLongSetInProgress,
    /// 19
    DataBlockNumberInvalid,
    /// 250
    OtherReason,
    /// Any other value.
    Other(u8),
}

impl DataAccessResult {
    /// From the wire byte.
    pub fn from_u8(v: u8) -> DataAccessResult {
        use DataAccessResult::*;
        match v {
            0 => Success,
            1 => HardwareFault,
            2 => TemporaryFailure,
            3 => ReadWriteDenied,
            4 => ObjectUndefined,
            9 => ObjectClassInconsistent,
            11 => ObjectUnavailable,
            12 => TypeUnmatched,
            13 => ScopeOfAccessViolated,
            14 => DataBlockUnavailable,
            15 => LongGetAborted,
            16 => NoLongGetInProgress,
            17 => LongSetAborted,
            18 => NoLongSetInProgress,
            19 => DataBlockNumberInvalid,
            250 => OtherReason,
            other => Other(other),
        }
    }

    /// The wire byte.
    pub fn to_u8(self) -> u8 {
        use DataAccessResult::*;
        match self {
            Success => 0,
            HardwareFault => 1,
            TemporaryFailure => 2,
            ReadWriteDenied => 3,
            ObjectUndefined => 4,
            ObjectClassInconsistent => 9,
            ObjectUnavailable => 11,
            TypeUnmatched => 12,
            ScopeOfAccessViolated => 13,
            DataBlockUnavailable => 14,
            LongGetAborted => 15,
            NoLongGetInProgress => 16,
            LongSetAborted => 17,
            NoLongSetInProgress => 18,
            DataBlockNumberInvalid => 19,
            OtherReason => 250,
            Other(v) => v,
        }
    }
}

/// Get-Data-Result: the value, or why it could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum GetDataResult {
    /// `[0] Data`
    Data(Data),
    /// `[1] Data-Access-Result`
    Error(DataAccessResult),
}

/// GET.request (tag 192).
#[derive(Debug, Clone, PartialEq)]
pub enum GetRequest {
    /// get-request-normal (1)
    Normal {
        /// Invoke id and priority.
        invoke: InvokeId,
        /// What to read.
        attribute: AttributeDescriptor,
        /// Optional selective access.
        access: Option<SelectiveAccess>,
    },
    /// get-request-next (2): asks for the data block after `block`.
    Next {
        /// Invoke id and priority.
        invoke: InvokeId,
        /// The number of the last block received.
        block: u32,
    },
    /// get-request-with-list (3)
    WithList {
        /// Invoke id and priority.
        invoke: InvokeId,
        /// What to read, each with optional selective access.
        items: Vec<(AttributeDescriptor, Option<SelectiveAccess>)>,
    },
}

/// One data block of a long GET (DataBlock-G): `raw` is a piece of the encoded result.
#[derive(Debug, Clone, PartialEq)]
pub struct DataBlockG {
    /// True on the last block.
    pub last_block: bool,
    /// Block number (1-based).
    pub block_number: u32,
    /// `[0] raw-data` (a slice of the A-XDR encoding of the whole result), or `[1] data-access-result`.
    pub result: Result<Vec<u8>, DataAccessResult>,
}

/// GET.response (tag 196).
#[derive(Debug, Clone, PartialEq)]
pub enum GetResponse {
    /// get-response-normal (1)
    Normal {
        /// Invoke id and priority.
        invoke: InvokeId,
        /// The result.
        result: GetDataResult,
    },
    /// get-response-with-datablock (2)
    WithDataBlock {
        /// Invoke id and priority.
        invoke: InvokeId,
        /// The block.
        block: DataBlockG,
    },
    /// get-response-with-list (3)
    WithList {
        /// Invoke id and priority.
        invoke: InvokeId,
        /// One result per requested item, in order.
        results: Vec<GetDataResult>,
    },
}

/// One data block of a long SET or ACTION (DataBlock-SA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataBlockSA {
    /// True on the last block.
    pub last_block: bool,
    /// Block number (1-based).
    pub block_number: u32,
    /// A slice of the A-XDR encoding of the value.
    pub raw: Vec<u8>,
}

/// SET.request (tag 193).
#[derive(Debug, Clone, PartialEq)]
pub enum SetRequest {
    /// set-request-normal (1)
    Normal {
        /// Invoke id and priority.
        invoke: InvokeId,
        /// What to write.
        attribute: AttributeDescriptor,
        /// Optional selective access.
        access: Option<SelectiveAccess>,
        /// The value.
        value: Data,
    },
    /// set-request-with-first-datablock (2)
    WithFirstDataBlock {
        /// Invoke id and priority.
        invoke: InvokeId,
        /// What to write.
        attribute: AttributeDescriptor,
        /// Optional selective access.
        access: Option<SelectiveAccess>,
        /// The first block.
        block: DataBlockSA,
    },
    /// set-request-with-datablock (3)
    WithDataBlock {
        /// Invoke id and priority.
        invoke: InvokeId,
        /// The next block.
        block: DataBlockSA,
    },
}

/// SET.response (tag 197).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetResponse {
    /// set-response-normal (1)
    Normal {
        /// Invoke id and priority.
        invoke: InvokeId,
        /// The result.
        result: DataAccessResult,
    },
    /// set-response-datablock (2): block received, send the next.
    DataBlock {
        /// Invoke id and priority.
        invoke: InvokeId,
        /// Block number acknowledged.
        block_number: u32,
    },
    /// set-response-last-datablock (3)
    LastDataBlock {
        /// Invoke id and priority.
        invoke: InvokeId,
        /// The result.
        result: DataAccessResult,
        /// Block number acknowledged.
        block_number: u32,
    },
}

/// ACTION.request (tag 195), normal only.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRequest {
    /// Invoke id and priority.
    pub invoke: InvokeId,
    /// The method to invoke.
    pub method: MethodDescriptor,
    /// Method invocation parameters (`None` = absent; most methods take `integer(0)`).
    pub parameters: Option<Data>,
}

/// Action-Result (Blue Book enum): 0 success, 1 hardware-fault, 2 temporary-failure, 3 read-write-denied,
/// 4 object-undefined, 9 object-class-inconsistent, 11 object-unavailable, 12 type-unmatched,
/// 13 scope-of-access-violated, 14 data-block-unavailable, 15 long-action-aborted,
/// 16 no-long-action-in-progress, 250 other-reason. Kept as the raw byte.
pub type ActionResult = u8;

/// ACTION.response (tag 199), normal only.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionResponse {
    /// Invoke id and priority.
    pub invoke: InvokeId,
    /// The result (0 = success).
    pub result: ActionResult,
    /// Optional return parameters.
    pub return_parameters: Option<GetDataResult>,
}

/// The application context name of an association (`2.16.756.5.8.1.x`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApplicationContext {
    /// 1: logical name referencing, no ciphering.
    LogicalName,
    /// 3: logical name referencing with ciphering.
    LogicalNameCiphered,
    /// Any other last arc (2 = SN, 4 = SN ciphered), kept.
    Other(u8),
}

/// Authentication mechanism name (`2.16.756.5.8.2.x`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// 0: lowest level security (no authentication).
    None,
    /// 1: low level security (password).
    Lls,
    /// 5: high level security with GMAC.
    HlsGmac,
    /// Any other last arc (2 HLS manufacturer, 3 MD5, 4 SHA-1, 6 SHA-256, 7 ECDSA), kept.
    Other(u8),
}

/// The conformance block (24 bits, BER bit string `5F 1F 04 00 xx xx xx`), kept as the 24-bit value with
/// bit 0 = the most significant bit of the first content byte as the Green Book numbers them (bit 0
/// reserved-zero … bit 19 get, bit 20 set, bit 22 action, bit 12 block-transfer-with-get-or-read, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Conformance(pub u32);

impl Conformance {
    /// Bit number `n` as the Green Book numbers conformance bits (0 = most significant of the 24).
    pub const fn bit(n: u32) -> u32 {
        1 << (23 - n)
    }
    /// general-protection (1)
    pub const GENERAL_PROTECTION: u32 = Self::bit(1);
    /// general-block-transfer (2)
    pub const GENERAL_BLOCK_TRANSFER: u32 = Self::bit(2);
    /// attribute0-supported-with-set (8)
    pub const ATTRIBUTE0_WITH_SET: u32 = Self::bit(8);
    /// priority-mgmt-supported (9)
    pub const PRIORITY_MGMT: u32 = Self::bit(9);
    /// attribute0-supported-with-get (10)
    pub const ATTRIBUTE0_WITH_GET: u32 = Self::bit(10);
    /// block-transfer-with-get-or-read (11)
    pub const BLOCK_TRANSFER_WITH_GET: u32 = Self::bit(11);
    /// block-transfer-with-set-or-write (12)
    pub const BLOCK_TRANSFER_WITH_SET: u32 = Self::bit(12);
    /// block-transfer-with-action (13)
    pub const BLOCK_TRANSFER_WITH_ACTION: u32 = Self::bit(13);
    /// multiple-references (14)
    pub const MULTIPLE_REFERENCES: u32 = Self::bit(14);
    /// data-notification (16)
    pub const DATA_NOTIFICATION: u32 = Self::bit(16);
    /// access (17)
    pub const ACCESS: u32 = Self::bit(17);
    /// get (19)
    pub const GET: u32 = Self::bit(19);
    /// set (20)
    pub const SET: u32 = Self::bit(20);
    /// selective-access (21)
    pub const SELECTIVE_ACCESS: u32 = Self::bit(21);
    /// event-notification (22)
    pub const EVENT_NOTIFICATION: u32 = Self::bit(22);
    /// action (23)
    pub const ACTION: u32 = Self::bit(23);

    /// True when every bit of `mask` is set.
    pub fn has(self, mask: u32) -> bool {
        self.0 & mask == mask
    }
}

/// xDLMS InitiateRequest (tag 1), carried (possibly ciphered) in the AARQ's user-information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiateRequest {
    /// Dedicated key (only with ciphering).
    pub dedicated_key: Option<Vec<u8>>,
    /// response-allowed (default true).
    pub response_allowed: bool,
    /// proposed-quality-of-service.
    pub proposed_quality_of_service: Option<i8>,
    /// proposed-dlms-version-number (6).
    pub proposed_dlms_version: u8,
    /// proposed-conformance.
    pub proposed_conformance: Conformance,
    /// client-max-receive-pdu-size (0 = no limit).
    pub client_max_receive_pdu_size: u16,
}

/// xDLMS InitiateResponse (tag 8), carried (possibly ciphered) in the AARE's user-information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiateResponse {
    /// negotiated-quality-of-service.
    pub negotiated_quality_of_service: Option<i8>,
    /// negotiated-dlms-version-number (6).
    pub negotiated_dlms_version: u8,
    /// negotiated-conformance.
    pub negotiated_conformance: Conformance,
    /// server-max-receive-pdu-size.
    pub server_max_receive_pdu_size: u16,
    /// vaa-name (`0x0007` for LN referencing).
    pub vaa_name: u16,
}

/// AARQ (tag `0x60`, BER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aarq {
    /// `[1]` application-context-name.
    pub application_context: ApplicationContext,
    /// `[6]` calling-AP-title: the client system title (8 bytes) when ciphering.
    pub calling_ap_title: Option<Vec<u8>>,
    /// `[10]` sender-acse-requirements + `[11]` mechanism-name; `None` = no authentication fields at all.
    pub mechanism: Option<Mechanism>,
    /// `[12]` calling-authentication-value (charstring `[0]`): the LLS password or the HLS challenge CtoS.
    pub calling_authentication_value: Option<Vec<u8>>,
    /// `[30]` user-information: the encoded xDLMS InitiateRequest, or its glo-ciphered envelope (tag 33).
    pub user_information: Option<Vec<u8>>,
}

/// Association-result: 0 accepted, 1 rejected-permanent, 2 rejected-transient.
pub type AssociationResult = u8;

/// Associate-source-diagnostic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceDiagnostic {
    /// `[1]` acse-service-user: 0 null, 1 no-reason-given, 2 application-context-name-not-supported,
    /// 11 authentication-mechanism-name-not-recognised, 12 authentication-mechanism-name-required,
    /// 13 authentication-failure, 14 authentication-required.
    User(u8),
    /// `[2]` acse-service-provider: 0 null, 1 no-reason-given, 2 no-common-acse-version.
    Provider(u8),
}

/// AARE (tag `0x61`, BER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aare {
    /// `[1]` application-context-name.
    pub application_context: ApplicationContext,
    /// `[2]` result.
    pub result: AssociationResult,
    /// `[3]` result-source-diagnostic.
    pub diagnostic: SourceDiagnostic,
    /// `[4]` responding-AP-title: the server system title when ciphering.
    pub responding_ap_title: Option<Vec<u8>>,
    /// `[8]` responder-acse-requirements + `[9]` mechanism-name.
    pub mechanism: Option<Mechanism>,
    /// `[10]` responding-authentication-value: the HLS challenge StoC.
    pub responding_authentication_value: Option<Vec<u8>>,
    /// `[30]` user-information: encoded InitiateResponse, its glo-ciphered envelope (tag 40), or a
    /// ConfirmedServiceError (tag 14).
    pub user_information: Option<Vec<u8>>,
}

/// RLRQ (tag `0x62`) or RLRE (tag `0x63`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Release {
    /// `[0]` reason (RLRQ: 0 normal, 1 urgent, 30 user-defined; RLRE: 0 normal, 1 not-finished, 30).
    pub reason: Option<u8>,
    /// `[30]` user-information (an InitiateRequest/Response, possibly ciphered).
    pub user_information: Option<Vec<u8>>,
}

/// ExceptionResponse (tag 216): state-error (1 service-not-allowed, 2 service-unknown) and service-error
/// (1 operation-not-possible, 2 service-not-supported, 3 other-reason, 4 pdu-too-long, 5 deciphering-error,
/// 6 invocation-counter-error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExceptionResponse {
    /// state-error
    pub state_error: u8,
    /// service-error
    pub service_error: u8,
}

/// ConfirmedServiceError (tag 14): which service (1 initiateError, 5 read, 6 write, …), the error class
/// (tag of the ServiceError CHOICE: 0 application-reference, 1 hardware-resource, 2 vde-state-error,
/// 3 service, 4 definition, 5 access, 6 initiate, 7 load-data-set, 9 task, 10 other) and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConfirmedServiceError {
    /// The service the error is about.
    pub service: u8,
    /// The ServiceError CHOICE tag.
    pub class: u8,
    /// The error enum value.
    pub value: u8,
}

/// A glo-ciphered service APDU (security suite 0, service-specific global key): tag, then an octet string
/// of security control byte, invocation counter and the ciphered (or authenticated-only) payload with its
/// 12-byte tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GloCiphered {
    /// The glo tag: 33 initiate-request, 40 initiate-response, 46 confirmed-service-error,
    /// 200 get-request, 201 set-request, 203 action-request, 204 get-response, 205 set-response,
    /// 207 action-response (see [`glo_tag_for`]). Kept as sent.
    pub tag: u8,
    /// Security control byte (bit 4 authentication, bit 5 encryption, low nibble suite id).
    pub security_control: u8,
    /// Invocation counter (the IV's last 4 bytes).
    pub invocation_counter: u32,
    /// The ciphertext (or plaintext when only authenticated) followed by the authentication tag if any.
    pub payload: Vec<u8>,
}

/// general-glo-ciphering (tag 219): like [`GloCiphered`] but carries the sender's system title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneralGloCiphering {
    /// The sender's system title (8 bytes).
    pub system_title: Vec<u8>,
    /// Security control byte.
    pub security_control: u8,
    /// Invocation counter.
    pub invocation_counter: u32,
    /// Ciphertext (or plaintext) and tag.
    pub payload: Vec<u8>,
}

/// The glo-ciphered tag that carries a plain APDU of tag `plain` (1→33, 8→40, 14→46, 192→200,
/// 193→201, 195→203, 196→204, 197→205, 199→207), or `None` for a tag with no glo counterpart.
pub fn glo_tag_for(plain: u8) -> Option<u8> {
    match plain {
        1 => Some(33),
        8 => Some(40),
        14 => Some(46),
        192 | 193 | 195 | 196 | 197 | 199 => Some(plain + 8),
        _ => None,
    }
}

/// Every APDU this layer speaks.
#[derive(Debug, Clone, PartialEq)]
pub enum Apdu {
    /// 1
    InitiateRequest(InitiateRequest),
    /// 8
    InitiateResponse(InitiateResponse),
    /// 14
    ConfirmedServiceError(ConfirmedServiceError),
    /// 0x60
    Aarq(Aarq),
    /// 0x61
    Aare(Aare),
    /// 0x62
    Rlrq(Release),
    /// 0x63
    Rlre(Release),
    /// 192
    GetRequest(GetRequest),
    /// 193
    SetRequest(SetRequest),
    /// 195
    ActionRequest(ActionRequest),
    /// 196
    GetResponse(GetResponse),
    /// 197
    SetResponse(SetResponse),
    /// 199
    ActionResponse(ActionResponse),
    /// 216
    ExceptionResponse(ExceptionResponse),
    /// 33, 40, 46, 200..=207
    GloCiphered(GloCiphered),
    /// 219
    GeneralGloCiphering(GeneralGloCiphering),
}

/// Why bytes are not an APDU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApduError {
    /// Empty input or input ending inside a field.
    #[error("truncated APDU: {0}")]
    Truncated(&'static str),
    /// A first byte this layer does not know.
    #[error("unknown APDU tag {0} (0x{0:02X})")]
    UnknownTag(u8),
    /// A CHOICE or enum value that is not defined.
    #[error("bad {what}: {value}")]
    BadValue {
        /// The field.
        what: &'static str,
        /// The value found.
        value: u32,
    },
    /// A BER element of the AARQ/AARE/RLRQ/RLRE is malformed (wrong tag, length beyond the input).
    #[error("bad BER in {0}")]
    Ber(&'static str),
    /// A `Data` value inside the APDU is malformed.
    #[error("bad data: {0}")]
    Data(#[from] AxdrError),
    /// Bytes left over after a complete APDU.
    #[error("{0} trailing bytes after the APDU")]
    Trailing(usize),
}

impl Apdu {
    /// The first byte of this APDU's encoding.
    pub fn tag(&self) -> u8 {
        match self {
            Apdu::InitiateRequest(_) => 1,
            Apdu::InitiateResponse(_) => 8,
            Apdu::ConfirmedServiceError(_) => 14,
            Apdu::Aarq(_) => 0x60,
            Apdu::Aare(_) => 0x61,
            Apdu::Rlrq(_) => 0x62,
            Apdu::Rlre(_) => 0x63,
            Apdu::GetRequest(_) => 192,
            Apdu::SetRequest(_) => 193,
            Apdu::ActionRequest(_) => 195,
            Apdu::GetResponse(_) => 196,
            Apdu::SetResponse(_) => 197,
            Apdu::ActionResponse(_) => 199,
            Apdu::ExceptionResponse(_) => 216,
            Apdu::GloCiphered(g) => g.tag,
            Apdu::GeneralGloCiphering(_) => 219,
        }
    }

    /// Encodes the APDU (never fails, never panics).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding of the APDU to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Apdu::InitiateRequest(r) => enc_initiate_request(r, out),
            Apdu::InitiateResponse(r) => enc_initiate_response(r, out),
            Apdu::ConfirmedServiceError(e) => out.extend_from_slice(&[14, e.service, e.class, e.value]),
            Apdu::Aarq(a) => enc_aarq(a, out),
            Apdu::Aare(a) => enc_aare(a, out),
            Apdu::Rlrq(r) => enc_release(0x62, r, out),
            Apdu::Rlre(r) => enc_release(0x63, r, out),
            Apdu::GetRequest(r) => enc_get_request(r, out),
            Apdu::SetRequest(r) => enc_set_request(r, out),
            Apdu::ActionRequest(r) => enc_action_request(r, out),
            Apdu::GetResponse(r) => enc_get_response(r, out),
            Apdu::SetResponse(r) => enc_set_response(r, out),
            Apdu::ActionResponse(r) => enc_action_response(r, out),
            Apdu::ExceptionResponse(e) => out.extend_from_slice(&[216, e.state_error, e.service_error]),
            Apdu::GloCiphered(g) => {
                out.push(g.tag);
                enc_ciphered_body(g.security_control, g.invocation_counter, &g.payload, out);
            }
            Apdu::GeneralGloCiphering(g) => {
                out.push(219);
                encode_length(g.system_title.len(), out);
                out.extend_from_slice(&g.system_title);
                enc_ciphered_body(g.security_control, g.invocation_counter, &g.payload, out);
            }
        }
    }

    /// Decodes one complete APDU: every byte of `buf` must belong to it.
    pub fn decode(buf: &[u8]) -> Result<Apdu, ApduError> {
        let mut r = Reader::new(buf);
        let apdu = r.apdu()?;
        r.finish()?;
        Ok(apdu)
    }
}

impl InitiateRequest {
    /// Encodes the InitiateRequest (tag 1).
    pub fn encode(&self) -> Vec<u8> {
        Apdu::InitiateRequest(self.clone()).encode()
    }

    /// Decodes an InitiateRequest.
    pub fn decode(buf: &[u8]) -> Result<InitiateRequest, ApduError> {
        match Apdu::decode(buf)? {
            Apdu::InitiateRequest(r) => Ok(r),
            other => Err(ApduError::UnknownTag(other.tag())),
        }
    }
}

impl InitiateResponse {
    /// Encodes the InitiateResponse (tag 8).
    pub fn encode(&self) -> Vec<u8> {
        Apdu::InitiateResponse(self.clone()).encode()
    }

    /// Decodes an InitiateResponse.
    pub fn decode(buf: &[u8]) -> Result<InitiateResponse, ApduError> {
        match Apdu::decode(buf)? {
            Apdu::InitiateResponse(r) => Ok(r),
            other => Err(ApduError::UnknownTag(other.tag())),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------------------

/// BER object identifier prefix of the DLMS application context names (`2.16.756.5.8.1`).
const CONTEXT_OID_PREFIX: [u8; 6] = [0x60, 0x85, 0x74, 0x05, 0x08, 0x01];
/// BER object identifier prefix of the DLMS authentication mechanism names (`2.16.756.5.8.2`).
const MECHANISM_OID_PREFIX: [u8; 6] = [0x60, 0x85, 0x74, 0x05, 0x08, 0x02];
/// acse-requirements: BIT STRING with the authentication functional unit (bit 0) set.
const ACSE_REQUIREMENTS_AUTHENTICATION: [u8; 2] = [0x07, 0x80];

impl ApplicationContext {
    /// The last arc of the OID.
    pub fn to_u8(self) -> u8 {
        match self {
            ApplicationContext::LogicalName => 1,
            ApplicationContext::LogicalNameCiphered => 3,
            ApplicationContext::Other(v) => v,
        }
    }

    /// From the last arc of the OID.
    pub fn from_u8(v: u8) -> ApplicationContext {
        match v {
            1 => ApplicationContext::LogicalName,
            3 => ApplicationContext::LogicalNameCiphered,
            v => ApplicationContext::Other(v),
        }
    }
}

impl Mechanism {
    /// The last arc of the OID.
    pub fn to_u8(self) -> u8 {
        match self {
            Mechanism::None => 0,
            Mechanism::Lls => 1,
            Mechanism::HlsGmac => 5,
            Mechanism::Other(v) => v,
        }
    }

    /// From the last arc of the OID.
    pub fn from_u8(v: u8) -> Mechanism {
        match v {
            0 => Mechanism::None,
            1 => Mechanism::Lls,
            5 => Mechanism::HlsGmac,
            v => Mechanism::Other(v),
        }
    }
}

/// Appends a BER element (single-byte tag, definite length).
fn ber(tag: u8, content: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    // BER definite lengths use the same short/long form as A-XDR.
    encode_length(content.len(), out);
    out.extend_from_slice(content);
}

fn ber_context_name(ctx: ApplicationContext, out: &mut Vec<u8>) {
    let mut oid = CONTEXT_OID_PREFIX.to_vec();
    oid.push(ctx.to_u8());
    let mut inner = Vec::with_capacity(9);
    ber(0x06, &oid, &mut inner);
    ber(0xA1, &inner, out);
}

fn ber_mechanism(tag: u8, m: Mechanism, out: &mut Vec<u8>) {
    let mut oid = MECHANISM_OID_PREFIX.to_vec();
    oid.push(m.to_u8());
    ber(tag, &oid, out);
}

fn ber_wrapped(outer: u8, inner: u8, value: &[u8], out: &mut Vec<u8>) {
    let mut content = Vec::with_capacity(value.len() + 5);
    ber(inner, value, &mut content);
    ber(outer, &content, out);
}

fn enc_aarq(a: &Aarq, out: &mut Vec<u8>) {
    let mut c = Vec::new();
    ber_context_name(a.application_context, &mut c);
    if let Some(title) = &a.calling_ap_title {
        ber_wrapped(0xA6, 0x04, title, &mut c);
    }
    if let Some(m) = a.mechanism {
        ber(0x8A, &ACSE_REQUIREMENTS_AUTHENTICATION, &mut c);
        ber_mechanism(0x8B, m, &mut c);
    }
    if let Some(v) = &a.calling_authentication_value {
        ber_wrapped(0xAC, 0x80, v, &mut c);
    }
    if let Some(ui) = &a.user_information {
        ber_wrapped(0xBE, 0x04, ui, &mut c);
    }
    ber(0x60, &c, out);
}

fn enc_aare(a: &Aare, out: &mut Vec<u8>) {
    let mut c = Vec::new();
    ber_context_name(a.application_context, &mut c);
    ber_wrapped(0xA2, 0x02, &[a.result], &mut c);
    let (choice, value) = match a.diagnostic {
        SourceDiagnostic::User(v) => (0xA1, v),
        SourceDiagnostic::Provider(v) => (0xA2, v),
    };
    let mut diag = Vec::with_capacity(5);
    ber_wrapped(choice, 0x02, &[value], &mut diag);
    ber(0xA3, &diag, &mut c);
    if let Some(title) = &a.responding_ap_title {
        ber_wrapped(0xA4, 0x04, title, &mut c);
    }
    if let Some(m) = a.mechanism {
        ber(0x88, &ACSE_REQUIREMENTS_AUTHENTICATION, &mut c);
        ber_mechanism(0x89, m, &mut c);
    }
    if let Some(v) = &a.responding_authentication_value {
        ber_wrapped(0xAA, 0x80, v, &mut c);
    }
    if let Some(ui) = &a.user_information {
        ber_wrapped(0xBE, 0x04, ui, &mut c);
    }
    ber(0x61, &c, out);
}

fn enc_release(tag: u8, r: &Release, out: &mut Vec<u8>) {
    let mut c = Vec::new();
    if let Some(reason) = r.reason {
        ber(0x80, &[reason], &mut c);
    }
    if let Some(ui) = &r.user_information {
        ber_wrapped(0xBE, 0x04, ui, &mut c);
    }
    ber(tag, &c, out);
}

fn enc_conformance(c: Conformance, out: &mut Vec<u8>) {
    let [_, a, b, d] = c.0.to_be_bytes();
    out.extend_from_slice(&[0x5F, 0x1F, 0x04, 0x00, a, b, d]);
}

fn enc_initiate_request(r: &InitiateRequest, out: &mut Vec<u8>) {
    out.push(1);
    match &r.dedicated_key {
        Some(key) => {
            out.push(1);
            encode_length(key.len(), out);
            out.extend_from_slice(key);
        }
        None => out.push(0),
    }
    // response-allowed is BOOLEAN DEFAULT TRUE: the default is sent as "absent".
    if r.response_allowed {
        out.push(0);
    } else {
        out.extend_from_slice(&[1, 0]);
    }
    enc_optional_i8(r.proposed_quality_of_service, out);
    out.push(r.proposed_dlms_version);
    enc_conformance(r.proposed_conformance, out);
    out.extend_from_slice(&r.client_max_receive_pdu_size.to_be_bytes());
}

fn enc_initiate_response(r: &InitiateResponse, out: &mut Vec<u8>) {
    out.push(8);
    enc_optional_i8(r.negotiated_quality_of_service, out);
    out.push(r.negotiated_dlms_version);
    enc_conformance(r.negotiated_conformance, out);
    out.extend_from_slice(&r.server_max_receive_pdu_size.to_be_bytes());
    out.extend_from_slice(&r.vaa_name.to_be_bytes());
}

fn enc_optional_i8(v: Option<i8>, out: &mut Vec<u8>) {
    match v {
        Some(v) => out.extend_from_slice(&[1, v as u8]),
        None => out.push(0),
    }
}

fn enc_attribute(a: &AttributeDescriptor, out: &mut Vec<u8>) {
    out.extend_from_slice(&a.class_id.to_be_bytes());
    out.extend_from_slice(&a.instance);
    out.push(a.attribute as u8);
}

fn enc_method(m: &MethodDescriptor, out: &mut Vec<u8>) {
    out.extend_from_slice(&m.class_id.to_be_bytes());
    out.extend_from_slice(&m.instance);
    out.push(m.method as u8);
}

fn enc_access(a: &Option<SelectiveAccess>, out: &mut Vec<u8>) {
    match a {
        Some(a) => {
            out.extend_from_slice(&[1, a.selector]);
            a.parameters.encode(out);
        }
        None => out.push(0),
    }
}

fn enc_octets(b: &[u8], out: &mut Vec<u8>) {
    encode_length(b.len(), out);
    out.extend_from_slice(b);
}

fn enc_get_data_result(r: &GetDataResult, out: &mut Vec<u8>) {
    match r {
        GetDataResult::Data(d) => {
            out.push(0);
            d.encode(out);
        }
        GetDataResult::Error(e) => out.extend_from_slice(&[1, e.to_u8()]),
    }
}

fn enc_block_sa(b: &DataBlockSA, out: &mut Vec<u8>) {
    out.push(u8::from(b.last_block));
    out.extend_from_slice(&b.block_number.to_be_bytes());
    enc_octets(&b.raw, out);
}

fn enc_get_request(r: &GetRequest, out: &mut Vec<u8>) {
    out.push(192);
    match r {
        GetRequest::Normal { invoke, attribute, access } => {
            out.extend_from_slice(&[1, invoke.0]);
            enc_attribute(attribute, out);
            enc_access(access, out);
        }
        GetRequest::Next { invoke, block } => {
            out.extend_from_slice(&[2, invoke.0]);
            out.extend_from_slice(&block.to_be_bytes());
        }
        GetRequest::WithList { invoke, items } => {
            out.extend_from_slice(&[3, invoke.0]);
            encode_length(items.len(), out);
            for (attribute, access) in items {
                enc_attribute(attribute, out);
                enc_access(access, out);
            }
        }
    }
}

fn enc_get_response(r: &GetResponse, out: &mut Vec<u8>) {
    out.push(196);
    match r {
        GetResponse::Normal { invoke, result } => {
            out.extend_from_slice(&[1, invoke.0]);
            enc_get_data_result(result, out);
        }
        GetResponse::WithDataBlock { invoke, block } => {
            out.extend_from_slice(&[2, invoke.0, u8::from(block.last_block)]);
            out.extend_from_slice(&block.block_number.to_be_bytes());
            match &block.result {
                Ok(raw) => {
                    out.push(0);
                    enc_octets(raw, out);
                }
                Err(e) => out.extend_from_slice(&[1, e.to_u8()]),
            }
        }
        GetResponse::WithList { invoke, results } => {
            out.extend_from_slice(&[3, invoke.0]);
            encode_length(results.len(), out);
            for result in results {
                enc_get_data_result(result, out);
            }
        }
    }
}

fn enc_set_request(r: &SetRequest, out: &mut Vec<u8>) {
    out.push(193);
    match r {
        SetRequest::Normal { invoke, attribute, access, value } => {
            out.extend_from_slice(&[1, invoke.0]);
            enc_attribute(attribute, out);
            enc_access(access, out);
            value.encode(out);
        }
        SetRequest::WithFirstDataBlock { invoke, attribute, access, block } => {
            out.extend_from_slice(&[2, invoke.0]);
            enc_attribute(attribute, out);
            enc_access(access, out);
            enc_block_sa(block, out);
        }
        SetRequest::WithDataBlock { invoke, block } => {
            out.extend_from_slice(&[3, invoke.0]);
            enc_block_sa(block, out);
        }
    }
}

fn enc_set_response(r: &SetResponse, out: &mut Vec<u8>) {
    out.push(197);
    match r {
        SetResponse::Normal { invoke, result } => out.extend_from_slice(&[1, invoke.0, result.to_u8()]),
        SetResponse::DataBlock { invoke, block_number } => {
            out.extend_from_slice(&[2, invoke.0]);
            out.extend_from_slice(&block_number.to_be_bytes());
        }
        SetResponse::LastDataBlock { invoke, result, block_number } => {
            out.extend_from_slice(&[3, invoke.0, result.to_u8()]);
            out.extend_from_slice(&block_number.to_be_bytes());
        }
    }
}

fn enc_action_request(r: &ActionRequest, out: &mut Vec<u8>) {
    out.extend_from_slice(&[195, 1, r.invoke.0]);
    enc_method(&r.method, out);
    match &r.parameters {
        Some(d) => {
            out.push(1);
            d.encode(out);
        }
        None => out.push(0),
    }
}

fn enc_action_response(r: &ActionResponse, out: &mut Vec<u8>) {
    out.extend_from_slice(&[199, 1, r.invoke.0, r.result]);
    match &r.return_parameters {
        Some(p) => {
            out.push(1);
            enc_get_data_result(p, out);
        }
        None => out.push(0),
    }
}

fn enc_ciphered_body(sc: u8, ic: u32, payload: &[u8], out: &mut Vec<u8>) {
    encode_length(5 + payload.len(), out);
    out.push(sc);
    out.extend_from_slice(&ic.to_be_bytes());
    out.extend_from_slice(payload);
}

// ---------------------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------------------

/// Cursor over the input; every read is bounds-checked, every length checked against what is left.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, at: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.at)
    }

    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.at..).unwrap_or_default()
    }

    fn finish(&self) -> Result<(), ApduError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(ApduError::Trailing(n)),
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ApduError> {
        if n > self.remaining() {
            return Err(ApduError::Truncated(what));
        }
        let s = self.buf.get(self.at..self.at + n).ok_or(ApduError::Truncated(what))?;
        self.at += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ApduError> {
        self.take(N, what)?.try_into().map_err(|_| ApduError::Truncated(what))
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, ApduError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, ApduError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ApduError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// An OPTIONAL's presence flag (0 absent, 1 present).
    fn flag(&mut self, what: &'static str) -> Result<bool, ApduError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(ApduError::BadValue { what, value: u32::from(v) }),
        }
    }

    /// A BOOLEAN (0 false, anything else true).
    fn boolean(&mut self, what: &'static str) -> Result<bool, ApduError> {
        Ok(self.u8(what)? != 0)
    }

    /// An A-XDR length that must fit in what is left.
    fn length(&mut self, what: &'static str) -> Result<usize, ApduError> {
        if self.remaining() == 0 {
            return Err(ApduError::Truncated(what));
        }
        let (len, used) = decode_length(self.rest())?;
        self.at += used;
        if len > self.remaining() {
            return Err(ApduError::Truncated(what));
        }
        Ok(len)
    }

    /// An A-XDR octet string without its tag: length and bytes.
    fn octets(&mut self, what: &'static str) -> Result<Vec<u8>, ApduError> {
        let len = self.length(what)?;
        Ok(self.take(len, what)?.to_vec())
    }

    fn data(&mut self) -> Result<Data, ApduError> {
        if self.remaining() == 0 {
            return Err(ApduError::Truncated("data"));
        }
        let (data, used) = Data::decode(self.rest())?;
        self.at += used;
        Ok(data)
    }

    fn invoke(&mut self) -> Result<InvokeId, ApduError> {
        Ok(InvokeId(self.u8("invoke-id-and-priority")?))
    }

    fn attribute(&mut self) -> Result<AttributeDescriptor, ApduError> {
        let class_id = self.u16("class id")?;
        let instance = self.array("logical name")?;
        let attribute = self.u8("attribute id")? as i8;
        Ok(AttributeDescriptor { class_id, instance, attribute })
    }

    fn method(&mut self) -> Result<MethodDescriptor, ApduError> {
        let class_id = self.u16("class id")?;
        let instance = self.array("logical name")?;
        let method = self.u8("method id")? as i8;
        Ok(MethodDescriptor { class_id, instance, method })
    }

    fn access(&mut self) -> Result<Option<SelectiveAccess>, ApduError> {
        if !self.flag("access-selection")? {
            return Ok(None);
        }
        let selector = self.u8("access-selector")?;
        let parameters = self.data()?;
        Ok(Some(SelectiveAccess { selector, parameters }))
    }

    fn get_data_result(&mut self) -> Result<GetDataResult, ApduError> {
        match self.u8("Get-Data-Result")? {
            0 => Ok(GetDataResult::Data(self.data()?)),
            1 => Ok(GetDataResult::Error(DataAccessResult::from_u8(self.u8("data-access-result")?))),
            v => Err(ApduError::BadValue { what: "Get-Data-Result choice", value: u32::from(v) }),
        }
    }

    fn dar(&mut self) -> Result<DataAccessResult, ApduError> {
        Ok(DataAccessResult::from_u8(self.u8("data-access-result")?))
    }

    fn block_sa(&mut self) -> Result<DataBlockSA, ApduError> {
        let last_block = self.boolean("last-block")?;
        let block_number = self.u32("block-number")?;
        let raw = self.octets("raw-data")?;
        Ok(DataBlockSA { last_block, block_number, raw })
    }

    /// A count of list elements that each take at least one byte: more than the bytes left is truncation.
    fn count(&mut self, what: &'static str) -> Result<usize, ApduError> {
        self.length(what)
    }

    fn conformance(&mut self) -> Result<Conformance, ApduError> {
        let head = self.array::<4>("conformance")?;
        if head[..3] != [0x5F, 0x1F, 0x04] {
            return Err(ApduError::BadValue { what: "conformance tag", value: u32::from(head[0]) });
        }
        let [a, b, c] = self.array::<3>("conformance")?;
        Ok(Conformance(u32::from_be_bytes([0, a, b, c])))
    }

    fn optional_i8(&mut self, what: &'static str) -> Result<Option<i8>, ApduError> {
        Ok(if self.flag(what)? { Some(self.u8(what)? as i8) } else { None })
    }

    fn apdu(&mut self) -> Result<Apdu, ApduError> {
        let tag = self.u8("tag")?;
        Ok(match tag {
            1 => Apdu::InitiateRequest(self.initiate_request()?),
            8 => Apdu::InitiateResponse(self.initiate_response()?),
            14 => {
                let [service, class, value] = self.array("confirmed-service-error")?;
                Apdu::ConfirmedServiceError(ConfirmedServiceError { service, class, value })
            }
            0x60 => Apdu::Aarq(self.aarq()?),
            0x61 => Apdu::Aare(self.aare()?),
            0x62 => Apdu::Rlrq(self.release()?),
            0x63 => Apdu::Rlre(self.release()?),
            192 => Apdu::GetRequest(self.get_request()?),
            193 => Apdu::SetRequest(self.set_request()?),
            195 => Apdu::ActionRequest(self.action_request()?),
            196 => Apdu::GetResponse(self.get_response()?),
            197 => Apdu::SetResponse(self.set_response()?),
            199 => Apdu::ActionResponse(self.action_response()?),
            216 => {
                let state_error = self.u8("state-error")?;
                let service_error = self.u8("service-error")?;
                // invocation-counter-error [6] carries the expected counter (Unsigned32) since DLMS 8; older
                // servers send the bare enum. The value is not kept.
                if service_error == 6 && self.remaining() == 4 {
                    self.u32("invocation counter")?;
                }
                Apdu::ExceptionResponse(ExceptionResponse { state_error, service_error })
            }
            33 | 40 | 46 | 200..=207 => {
                let (security_control, invocation_counter, payload) = self.ciphered_body()?;
                Apdu::GloCiphered(GloCiphered { tag, security_control, invocation_counter, payload })
            }
            219 => {
                let system_title = self.octets("system title")?;
                let (security_control, invocation_counter, payload) = self.ciphered_body()?;
                Apdu::GeneralGloCiphering(GeneralGloCiphering {
                    system_title,
                    security_control,
                    invocation_counter,
                    payload,
                })
            }
            t => return Err(ApduError::UnknownTag(t)),
        })
    }

    fn ciphered_body(&mut self) -> Result<(u8, u32, Vec<u8>), ApduError> {
        let len = self.length("ciphered content")?;
        if len < 5 {
            return Err(ApduError::Truncated("security header"));
        }
        let sc = self.u8("security control")?;
        let ic = self.u32("invocation counter")?;
        let payload = self.take(len - 5, "ciphered payload")?.to_vec();
        Ok((sc, ic, payload))
    }

    fn initiate_request(&mut self) -> Result<InitiateRequest, ApduError> {
        let dedicated_key = if self.flag("dedicated-key")? { Some(self.octets("dedicated-key")?) } else { None };
        let response_allowed = if self.flag("response-allowed")? { self.boolean("response-allowed")? } else { true };
        let proposed_quality_of_service = self.optional_i8("proposed-quality-of-service")?;
        let proposed_dlms_version = self.u8("proposed-dlms-version-number")?;
        let proposed_conformance = self.conformance()?;
        let client_max_receive_pdu_size = self.u16("client-max-receive-pdu-size")?;
        Ok(InitiateRequest {
            dedicated_key,
            response_allowed,
            proposed_quality_of_service,
            proposed_dlms_version,
            proposed_conformance,
            client_max_receive_pdu_size,
        })
    }

    fn initiate_response(&mut self) -> Result<InitiateResponse, ApduError> {
        let negotiated_quality_of_service = self.optional_i8("negotiated-quality-of-service")?;
        let negotiated_dlms_version = self.u8("negotiated-dlms-version-number")?;
        let negotiated_conformance = self.conformance()?;
        let server_max_receive_pdu_size = self.u16("server-max-receive-pdu-size")?;
        let vaa_name = self.u16("vaa-name")?;
        Ok(InitiateResponse {
            negotiated_quality_of_service,
            negotiated_dlms_version,
            negotiated_conformance,
            server_max_receive_pdu_size,
            vaa_name,
        })
    }

    fn get_request(&mut self) -> Result<GetRequest, ApduError> {
        let choice = self.u8("get-request choice")?;
        let invoke = self.invoke()?;
        Ok(match choice {
            1 => GetRequest::Normal { invoke, attribute: self.attribute()?, access: self.access()? },
            2 => GetRequest::Next { invoke, block: self.u32("block-number")? },
            3 => {
                let count = self.count("attribute-descriptor-list")?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push((self.attribute()?, self.access()?));
                }
                GetRequest::WithList { invoke, items }
            }
            v => return Err(ApduError::BadValue { what: "get-request choice", value: u32::from(v) }),
        })
    }

    fn get_response(&mut self) -> Result<GetResponse, ApduError> {
        let choice = self.u8("get-response choice")?;
        let invoke = self.invoke()?;
        Ok(match choice {
            1 => GetResponse::Normal { invoke, result: self.get_data_result()? },
            2 => {
                let last_block = self.boolean("last-block")?;
                let block_number = self.u32("block-number")?;
                let result = match self.u8("DataBlock-G result")? {
                    0 => Ok(self.octets("raw-data")?),
                    1 => Err(self.dar()?),
                    v => return Err(ApduError::BadValue { what: "DataBlock-G result choice", value: u32::from(v) }),
                };
                GetResponse::WithDataBlock { invoke, block: DataBlockG { last_block, block_number, result } }
            }
            3 => {
                let count = self.count("get-data-result list")?;
                let mut results = Vec::with_capacity(count);
                for _ in 0..count {
                    results.push(self.get_data_result()?);
                }
                GetResponse::WithList { invoke, results }
            }
            v => return Err(ApduError::BadValue { what: "get-response choice", value: u32::from(v) }),
        })
    }

    fn set_request(&mut self) -> Result<SetRequest, ApduError> {
        let choice = self.u8("set-request choice")?;
        let invoke = self.invoke()?;
        Ok(match choice {
            1 => {
                let attribute = self.attribute()?;
                let access = self.access()?;
                SetRequest::Normal { invoke, attribute, access, value: self.data()? }
            }
            2 => {
                let attribute = self.attribute()?;
                let access = self.access()?;
                SetRequest::WithFirstDataBlock { invoke, attribute, access, block: self.block_sa()? }
            }
            3 => SetRequest::WithDataBlock { invoke, block: self.block_sa()? },
            v => return Err(ApduError::BadValue { what: "set-request choice", value: u32::from(v) }),
        })
    }

    fn set_response(&mut self) -> Result<SetResponse, ApduError> {
        let choice = self.u8("set-response choice")?;
        let invoke = self.invoke()?;
        Ok(match choice {
            1 => SetResponse::Normal { invoke, result: self.dar()? },
            2 => SetResponse::DataBlock { invoke, block_number: self.u32("block-number")? },
            3 => {
                let result = self.dar()?;
                SetResponse::LastDataBlock { invoke, result, block_number: self.u32("block-number")? }
            }
            v => return Err(ApduError::BadValue { what: "set-response choice", value: u32::from(v) }),
        })
    }

    fn action_request(&mut self) -> Result<ActionRequest, ApduError> {
        let choice = self.u8("action-request choice")?;
        if choice != 1 {
            return Err(ApduError::BadValue { what: "action-request choice", value: u32::from(choice) });
        }
        let invoke = self.invoke()?;
        let method = self.method()?;
        let parameters = if self.flag("method-invocation-parameters")? { Some(self.data()?) } else { None };
        Ok(ActionRequest { invoke, method, parameters })
    }

    fn action_response(&mut self) -> Result<ActionResponse, ApduError> {
        let choice = self.u8("action-response choice")?;
        if choice != 1 {
            return Err(ApduError::BadValue { what: "action-response choice", value: u32::from(choice) });
        }
        let invoke = self.invoke()?;
        let result = self.u8("action-result")?;
        let return_parameters = if self.flag("return-parameters")? { Some(self.get_data_result()?) } else { None };
        Ok(ActionResponse { invoke, result, return_parameters })
    }

    /// The content of the outermost BER element whose tag was just read: its length must be exactly what
    /// is left of the input.
    fn ber_outer(&mut self, what: &'static str) -> Result<Ber<'a>, ApduError> {
        let (len, used) = ber_length(self.rest(), what)?;
        self.at += used;
        let content = self.take(len, what)?;
        Ok(Ber { buf: content, at: 0, what })
    }

    fn aarq(&mut self) -> Result<Aarq, ApduError> {
        let mut elements = self.ber_outer("AARQ")?;
        let mut application_context = None;
        let mut aarq = Aarq {
            application_context: ApplicationContext::LogicalName,
            calling_ap_title: None,
            mechanism: None,
            calling_authentication_value: None,
            user_information: None,
        };
        while let Some((tag, value)) = elements.next()? {
            match tag {
                0xA1 => application_context = Some(context_name(value)?),
                0xA6 => aarq.calling_ap_title = Some(inner(value, 0x04, "calling-AP-title")?.to_vec()),
                0x8B => aarq.mechanism = Some(mechanism_name(value)?),
                0xAC => aarq.calling_authentication_value = Some(authentication_value(value)?),
                0xBE => aarq.user_information = Some(inner(value, 0x04, "user-information")?.to_vec()),
                // protocol-version, sender-acse-requirements, AE qualifiers and invocation ids,
                // implementation-information: not needed.
                _ => {}
            }
        }
        aarq.application_context = application_context.ok_or(ApduError::Ber("AARQ application-context-name"))?;
        Ok(aarq)
    }

    fn aare(&mut self) -> Result<Aare, ApduError> {
        let mut elements = self.ber_outer("AARE")?;
        let (mut application_context, mut result, mut diagnostic) = (None, None, None);
        let mut responding_ap_title = None;
        let mut mechanism = None;
        let mut responding_authentication_value = None;
        let mut user_information = None;
        while let Some((tag, value)) = elements.next()? {
            match tag {
                0xA1 => application_context = Some(context_name(value)?),
                0xA2 => result = Some(small_integer(inner(value, 0x02, "AARE result")?, "AARE result")?),
                0xA3 => {
                    let mut d = Ber { buf: value, at: 0, what: "result-source-diagnostic" };
                    let (choice, v) = d.next()?.ok_or(ApduError::Ber("result-source-diagnostic"))?;
                    let v = small_integer(inner(v, 0x02, "result-source-diagnostic")?, "result-source-diagnostic")?;
                    diagnostic = Some(match choice {
                        0xA1 => SourceDiagnostic::User(v),
                        0xA2 => SourceDiagnostic::Provider(v),
                        _ => return Err(ApduError::Ber("result-source-diagnostic choice")),
                    });
                }
                0xA4 => responding_ap_title = Some(inner(value, 0x04, "responding-AP-title")?.to_vec()),
                0x89 => mechanism = Some(mechanism_name(value)?),
                0xAA => responding_authentication_value = Some(authentication_value(value)?),
                0xBE => user_information = Some(inner(value, 0x04, "user-information")?.to_vec()),
                _ => {}
            }
        }
        Ok(Aare {
            application_context: application_context.ok_or(ApduError::Ber("AARE application-context-name"))?,
            result: result.ok_or(ApduError::Ber("AARE result"))?,
            diagnostic: diagnostic.ok_or(ApduError::Ber("AARE result-source-diagnostic"))?,
            responding_ap_title,
            mechanism,
            responding_authentication_value,
            user_information,
        })
    }

    fn release(&mut self) -> Result<Release, ApduError> {
        let mut elements = self.ber_outer("RLRQ/RLRE")?;
        let mut release = Release::default();
        while let Some((tag, value)) = elements.next()? {
            match tag {
                0x80 => release.reason = Some(small_integer(value, "release reason")?),
                0xBE => release.user_information = Some(inner(value, 0x04, "user-information")?.to_vec()),
                _ => {}
            }
        }
        Ok(release)
    }
}

/// A BER definite length at the start of `buf` (short form, or long form of 1 to 4 bytes): the length
/// and the bytes it took.
fn ber_length(buf: &[u8], what: &'static str) -> Result<(usize, usize), ApduError> {
    let first = *buf.first().ok_or(ApduError::Truncated(what))?;
    if first < 0x80 {
        return Ok((usize::from(first), 1));
    }
    let n = usize::from(first & 0x7F);
    if n == 0 || n > 4 {
        return Err(ApduError::Ber(what));
    }
    let bytes = buf.get(1..1 + n).ok_or(ApduError::Truncated(what))?;
    Ok((bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b)), 1 + n))
}

/// The elements of a BER constructed value, in order.
struct Ber<'a> {
    buf: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Ber<'a> {
    /// The next element's first tag byte and content; high tag numbers (`x1F` then continuation bytes)
    /// are consumed and reported by their first byte.
    fn next(&mut self) -> Result<Option<(u8, &'a [u8])>, ApduError> {
        let rest = self.buf.get(self.at..).unwrap_or_default();
        let Some(&tag) = rest.first() else { return Ok(None) };
        let mut at = 1;
        if tag & 0x1F == 0x1F {
            loop {
                let b = *rest.get(at).ok_or(ApduError::Truncated(self.what))?;
                at += 1;
                if b & 0x80 == 0 {
                    break;
                }
                if at > 5 {
                    return Err(ApduError::Ber(self.what));
                }
            }
        }
        let (len, used) = ber_length(rest.get(at..).unwrap_or_default(), self.what)?;
        at += used;
        let content = rest.get(at..).and_then(|r| r.get(..len)).ok_or(ApduError::Truncated(self.what))?;
        self.at += at + len;
        Ok(Some((tag, content)))
    }
}

/// The content of the single element of tag `tag` that `value` must consist of.
fn inner<'a>(value: &'a [u8], tag: u8, what: &'static str) -> Result<&'a [u8], ApduError> {
    let mut b = Ber { buf: value, at: 0, what };
    match b.next()? {
        Some((t, content)) if t == tag && b.at == value.len() => Ok(content),
        _ => Err(ApduError::Ber(what)),
    }
}

/// A one-byte INTEGER content.
fn small_integer(content: &[u8], what: &'static str) -> Result<u8, ApduError> {
    match content {
        [v] => Ok(*v),
        _ => Err(ApduError::Ber(what)),
    }
}

fn context_name(value: &[u8]) -> Result<ApplicationContext, ApduError> {
    match inner(value, 0x06, "application-context-name")? {
        [prefix @ .., last] if prefix == CONTEXT_OID_PREFIX => Ok(ApplicationContext::from_u8(*last)),
        _ => Err(ApduError::Ber("application-context-name")),
    }
}

fn mechanism_name(value: &[u8]) -> Result<Mechanism, ApduError> {
    match value {
        [prefix @ .., last] if prefix == MECHANISM_OID_PREFIX => Ok(Mechanism::from_u8(*last)),
        _ => Err(ApduError::Ber("mechanism-name")),
    }
}

/// Authentication-value: the charstring `[0]` (or bitstring `[1]`, whose content is kept as is).
fn authentication_value(value: &[u8]) -> Result<Vec<u8>, ApduError> {
    let mut b = Ber { buf: value, at: 0, what: "authentication-value" };
    match b.next()? {
        Some((0x80 | 0x81, content)) if b.at == value.len() => Ok(content.to_vec()),
        _ => Err(ApduError::Ber("authentication-value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glo_tags_and_invoke_ids() {
        assert_eq!(glo_tag_for(1), Some(33));
        assert_eq!(glo_tag_for(196), Some(204));
        assert_eq!(glo_tag_for(216), None);
        assert_eq!(InvokeId::confirmed(0x11), InvokeId(0xC1));
        assert_eq!(InvokeId(0xC5).id(), 5);
        for v in 0..=255u8 {
            assert_eq!(DataAccessResult::from_u8(v).to_u8(), v);
            assert_eq!(ApplicationContext::from_u8(v).to_u8(), v);
            assert_eq!(Mechanism::from_u8(v).to_u8(), v);
        }
    }

    #[test]
    fn long_ber_and_axdr_lengths_round_trip() {
        // A password of 200 bytes and a 300-byte user-information need BER long-form lengths (81 xx, 82 xx xx).
        let aarq = Apdu::Aarq(Aarq {
            application_context: ApplicationContext::LogicalName,
            calling_ap_title: None,
            mechanism: Some(Mechanism::Lls),
            calling_authentication_value: Some(vec![b'p'; 200]),
            user_information: Some(vec![0xAB; 300]),
        });
        let bytes = aarq.encode();
        // 11 context + 4 requirements + 9 mechanism + (3 + 3 + 200) authentication + (4 + 4 + 300) user-information.
        assert_eq!(&bytes[..4], &[0x60, 0x82, 0x02, 0x1A]);
        assert_eq!(&bytes[28..34], &[0xAC, 0x81, 0xCB, 0x80, 0x81, 0xC8]);
        assert_eq!(Apdu::decode(&bytes), Ok(aarq));
        // A data block of 1000 raw bytes: A-XDR length 82 03 E8.
        let block = Apdu::GetResponse(GetResponse::WithDataBlock {
            invoke: InvokeId(0xC1),
            block: DataBlockG { last_block: false, block_number: 7, result: Ok(vec![0x5A; 1000]) },
        });
        let bytes = block.encode();
        assert_eq!(&bytes[8..12], &[0x00, 0x82, 0x03, 0xE8]);
        assert_eq!(Apdu::decode(&bytes), Ok(block));
    }

    #[test]
    fn initiate_request_options() {
        let r = InitiateRequest {
            dedicated_key: Some(vec![0x11; 16]),
            response_allowed: false,
            proposed_quality_of_service: Some(-1),
            proposed_dlms_version: 6,
            proposed_conformance: Conformance(Conformance::GET | Conformance::GENERAL_PROTECTION),
            client_max_receive_pdu_size: 0,
        };
        let bytes = r.encode();
        assert_eq!(&bytes[..3], &[0x01, 0x01, 0x10]);
        assert_eq!(&bytes[19..], &[0x01, 0x00, 0x01, 0xFF, 0x06, 0x5F, 0x1F, 0x04, 0x00, 0x40, 0x00, 0x10, 0x00, 0x00]);
        assert_eq!(InitiateRequest::decode(&bytes), Ok(r));
        // response-allowed sent explicitly as TRUE decodes as the default.
        let explicit = [0x01, 0x00, 0x01, 0x01, 0x00, 0x06, 0x5F, 0x1F, 0x04, 0x00, 0x00, 0x10, 0x00, 0x04, 0x00];
        assert!(InitiateRequest::decode(&explicit).is_ok_and(|r| r.response_allowed));
        // Wrong conformance tag, bad OPTIONAL flag, wrong APDU.
        assert!(InitiateRequest::decode(&[0x01, 0, 0, 0, 6, 0x5F, 0x1E, 4, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(InitiateRequest::decode(&[0x01, 2]).is_err());
        assert_eq!(InitiateRequest::decode(&[0xD8, 1, 2]), Err(ApduError::UnknownTag(216)));
    }
}
