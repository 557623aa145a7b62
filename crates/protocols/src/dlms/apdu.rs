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

use super::axdr::{AxdrError, Data};

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

    /// Encodes the APDU.
    pub fn encode(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Decodes one complete APDU.
    pub fn decode(buf: &[u8]) -> Result<Apdu, ApduError> {
        Err(ApduError::Truncated(if buf.is_empty() { "tag" } else { "in progress" }))
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
