//! Device profiles: XML meter models (`devices/*.xml`) parsed into a typed [`Profile`], validated with
//! `file:line:col: message` errors, and the [`Reading`] data model every protocol ends in.
//!
//! This crate owns the profile format, its validation, profile lookup ([`resolve_profile`],
//! [`ProfileLibrary`]) and, per protocol, turning a profile into requests and replies into readings
//! ([`modbus`], [`mbus`], [`dlms`], [`mercury`]). It never names a port or a meter address: that is site
//! config. Parsing never panics on any input; every problem is a [`ProfileError`] pointing at the
//! offending element or attribute.
//!
//! # The profile format
//!
//! ```xml
//! <?xml version="1.0" encoding="UTF-8"?>
//! <profile id="eastron-sdm120" protocol="modbus" manufacturer="Eastron" model="SDM120-Modbus"
//!          document="Eastron SDM120-Modbus Smart Meter Modbus Protocol Implementation">
//!   <line baud="2400" parity="none" data="8" stop="1" address="1" timeout="500ms"/>
//!   <modbus max-block="80" max-gap="0"/>
//!   <value name="voltage_l1" obis="1-0:32.7.0" unit="V">
//!     <modbus table="input" register="0x0000" type="f32"/>
//!   </value>
//!   <value name="energy_import_total" obis="1-0:1.8.0" unit="Wh">
//!     <modbus table="input" register="0x0048" type="f32" scale="1000"/>  <!-- kWh → Wh -->
//!   </value>
//!   <control name="relay" description="load relay">
//!     <modbus coil="0x0000"/>
//!   </control>
//! </profile>
//! ```
//!
//! - `<profile>`: `protocol` (required; `modbus`, `mbus`, `dlms` or `mercury`), `manufacturer` and `model`
//!   (required), `id` (default: the file stem; `[a-z0-9][a-z0-9._-]*`), `document` (the manufacturer
//!   document and version the map comes from).
//! - `<line>` (optional, at most one): default line settings a site may override — `baud`, `parity`
//!   (`none`/`even`/`odd`), `data` (5–8), `stop` (1–2), `address` (factory unit address, 1–247 for
//!   Modbus), `timeout` (`500ms`, `2s`).
//! - `<modbus>` directly in `<profile>` (optional): `max-block` (registers per request, 1–125, default
//!   100), `max-gap` (unused registers a read may span to merge two values, default 0), and
//!   `word-order`/`byte-order` defaults for every value of the file.
//! - `<value>`: `name` (`[a-z][a-z0-9_]*`, unique), `obis` (`A-B:C.D.E` or `A-B:C.D.E*F`, unique — it is
//!   the store key), `unit` (one of [`UNITS`]; `""` for dimensionless values such as a power factor),
//!   `kind` (`instantaneous`, `counter`, `static`; default `counter` for `Wh`, `varh`, `VAh`, `m3`, `J`,
//!   else `instantaneous`), `description`. It holds exactly one source element named after the
//!   profile's protocol.
//! - Modbus source `<modbus>` in a `<value>`: `table` (`coil`, `discrete`, `holding`, `input`),
//!   `register` (0-based protocol address, decimal or `0x` hex — a manual's `30001` or `40001` is
//!   register 0: subtract 30001/40001 when copying such numbers), `type` (`u16`, `i16`, `u32`, `i32`,
//!   `u64`, `i64`, `f32`, `f64`; required for registers, not allowed for bits), `word-order`
//!   (`high-first` default, `low-first`), `byte-order` (`big` default, `little`), `scale` (default 1)
//!   and `offset` (default 0): the reading is `raw × scale + offset`. Energy is stored in Wh/varh, so
//!   a kWh register takes `scale="1000"`. Coils and discrete inputs read as 0 or 1.
//! - `<control>`: `name`, `description`, and one `<modbus coil="…"/>` (FC 5) or
//!   `<modbus register="…" on="1" off="0"/>` (FC 6) target.
//!
//! - M-Bus source `<mbus>` in a `<value>` selects one record of the read-out by `dif-vif`, `quantity`,
//!   `description`, `function`, `storage`, `tariff`, `subunit` (plus `scale`); `<mbus all-records="true"/>`
//!   in `<profile>` stores every other record under a derived name and OBIS code. See [`mbus`] for the
//!   rules; the M-Bus values are in [`mbus::MbusProfile`] ([`mbus::parse_mbus_profile`],
//!   [`mbus::load_mbus_profile`], [`mbus::MbusProfile::from_profile`]), while [`Profile::values`] of an
//!   M-Bus profile is empty.
//!
//! - DLMS/COSEM: `<dlms client="16" server-logical="1" authentication="none|low|high-gmac" …/>` in
//!   `<profile>` holds the association defaults; a `<value>` reads `<dlms class="3" attribute="2"/>` of the
//!   object named by its `obis` (its `unit` is optional: the meter reports scaler and unit);
//!   `<load-profile name="…" obis="1-0:99.1.0" period="900"/>` reads a profile generic; the
//!   `<control>` target is `<dlms class="70" obis="0-0:96.3.10"/>`. See [`dlms`]; the DLMS objects are in
//!   [`dlms::DlmsProfile`] ([`dlms::parse_dlms_profile`], [`dlms::load_dlms_profile`],
//!   [`dlms::resolve_dlms_profile`], [`dlms::DlmsProfile::from_profile`]), while [`Profile::values`] and
//!   [`Profile::controls`] of a DLMS profile are empty.
//!
//! - Mercury (Incotex 230/231/234/236): `<mercury level="1" multiplier="1"/>` in `<profile>` holds the
//!   channel defaults; a `<value>` reads `<mercury energy="from-reset" tariff="0" quantity="A+"/>`,
//!   `<mercury instant="voltage" phase="1"/>` or `<mercury parameter="serial"/>`;
//!   `<load-profile name="…" obis="1-0:99.1.0" period="1800"/>` reads the stored power profile. See
//!   [`mercury`]; the Mercury values are in [`mercury::MercuryProfile`] ([`mercury::parse_mercury_profile`],
//!   [`mercury::load_mercury_profile`], [`mercury::resolve_mercury_profile`],
//!   [`mercury::MercuryProfile::from_profile`]), while [`Profile::values`] of a Mercury profile is empty.
//!
//! No profile holds a key or a password: an attribute asking for one is an error that points at the site
//! config. Unknown elements and attributes are errors, never ignored, so a typo cannot silently drop a
//! value. A later protocol adds its own source element and its own options element beside `<modbus>`;
//! everything else stays the same.

pub mod dlms;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod harness;
mod library;
pub mod mbus;
pub mod mercury;
pub mod modbus;
mod model;
mod obis;
mod profile;
mod reading;
mod xml;

pub use library::{check_paths, default_search_dirs, load_profile, resolve_profile, ProfileLibrary, ResolveError};
pub use model::{
    Control, ControlSource, LineDefaults, ModbusControl, ModbusOptions, ModbusValue, Profile, Protocol, ValueDef,
    ValueKind, ValueSource,
};
pub use obis::{Obis, ObisError};
pub use profile::{parse_profile, ProfileError, UNITS};
pub use reading::{Quality, Reading, Value};
