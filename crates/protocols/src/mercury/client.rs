//! The async driver of one Mercury meter over the link `Bus`: it only pumps a [`Session`] (house style
//! rule 11) and decodes the replies.
//!
//! Each frame the session hands out goes to the bus as one `Exchange` with the session's [`Expect`] as
//! the matcher, the session's timeout and no bus retries (the session retries itself, so a re-open on
//! status 5 and the retry count stay in one place); the bus keeps the guard time, discards stale input and
//! drains the line after a failed attempt, and counts per meter. Several clients (of this and other
//! protocols) share one bus without colliding: the bus runs their exchanges one at a time.
//!
//! [`Expect`]: super::frame::Expect

use std::time::Instant;

use ami_link::{BusHandle, Exchange, LinkError};

use super::profile::ProfileWalk;
use super::request::{Bwri, EnergyArray, Request, Tariff};
use super::session::{Event, MercuryError, MercuryMeter, RequestId, Session};
use super::value::{
    decode_temperature, DecodeError, Energy, InstantValue, LastRecord, MeterTime, PhaseEnergy, ProfileRecord,
    SerialInfo, Stamp, Variant,
};

/// One Mercury meter read through a shared bus. Keep it for the life of the meter: it remembers whether
/// the channel is open.
#[derive(Debug)]
pub struct MercuryClient {
    bus: BusHandle,
    session: Session,
    profile_records: u16,
}

impl MercuryClient {
    /// A client for `meter` on `bus`; the channel opens with the first request that needs it.
    #[must_use]
    pub fn new(bus: BusHandle, meter: MercuryMeter) -> Self {
        Self { bus, session: Session::new(meter), profile_records: ProfileWalk::DEFAULT_RECORDS }
    }

    /// Sets the number of records in the meter's power-profile ring (default 4096, the Mercury 230's).
    #[must_use]
    pub fn with_profile_records(mut self, records: u16) -> Self {
        self.profile_records = records;
        self
    }

    /// The session (channel state, counters).
    #[must_use]
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The meter's settings.
    #[must_use]
    pub fn meter(&self) -> &MercuryMeter {
        self.session.meter()
    }

    fn decode_error(&self, request: &Request, error: DecodeError) -> MercuryError {
        MercuryError::Decode { meter: self.meter().id.clone(), request: request.name(), error }
    }

    /// Runs the session until request `id` is done.
    async fn pump(&mut self, id: RequestId) -> Result<Vec<u8>, MercuryError> {
        loop {
            while let Some(event) = self.session.poll_event() {
                match event {
                    Event::Done { id: done, result } if done == id => return result,
                    Event::Done { .. } => {}
                    Event::Opened => tracing::debug!(meter = %self.meter().id, "Mercury channel opened"),
                }
            }
            let now = Instant::now();
            let Some(tx) = self.session.poll_transmit(now) else {
                // invariant: after every handler an unfinished request has a frame to send; should that
                // ever not hold, end the request instead of spinning.
                let error = MercuryError::ChannelLost { meter: self.meter().id.clone(), request: "request".into() };
                if self.session.is_idle() {
                    return Err(error);
                }
                self.session.abort(&error);
                continue;
            };
            let meter = self.meter().id.clone();
            let matcher = tx.expect.map(|e| Box::new(e) as Box<dyn ami_link::ReplyMatcher>);
            let exchange = Exchange::new(&meter, tx.bytes, matcher).with_timeout(tx.timeout).with_retries(0);
            match self.bus.transact(exchange).await {
                Ok(reply) => self.session.handle_reply(Instant::now(), &reply.frame),
                Err(LinkError::Timeout { .. }) => {
                    let at = self.session.poll_timeout().unwrap_or_else(Instant::now);
                    self.session.handle_timeout(at.max(Instant::now()));
                }
                Err(LinkError::Corrupt { reason, .. }) => self.session.handle_corrupt(Instant::now(), &reason),
                Err(error) => self.session.abort(&MercuryError::Link { meter, error }),
            }
        }
    }

    /// Runs one request to its end: its reply data.
    ///
    /// # Errors
    /// See [`MercuryError`].
    pub async fn execute(&mut self, request: Request) -> Result<Vec<u8>, MercuryError> {
        let id = self.session.request(request);
        self.pump(id).await
    }

    /// Opens the channel now with the configured level and password.
    ///
    /// # Errors
    /// [`MercuryError::OpenRefused`] (naming the meter) on a wrong password or level; link errors.
    pub async fn open(&mut self) -> Result<(), MercuryError> {
        let id = self.session.open();
        self.pump(id).await.map(|_| ())
    }

    /// Closes the channel (for shutdown).
    ///
    /// # Errors
    /// Link errors; a meter that does not answer.
    pub async fn close(&mut self) -> Result<(), MercuryError> {
        let id = self.session.close();
        self.pump(id).await.map(|_| ())
    }

    /// When [`keep_alive`](Self::keep_alive) has something to do: the channel open and idle, its keep-alive
    /// time. `None` while a request is in flight or the channel is closed.
    #[must_use]
    pub fn keep_alive_due(&self) -> Option<Instant> {
        if self.session.is_idle() {
            self.session.poll_timeout()
        } else {
            None
        }
    }

    /// Sends a test frame when the keep-alive is due (the channel open and idle for
    /// [`MercuryMeter::keep_alive`]); returns whether one was sent. Call it between read-outs.
    ///
    /// # Errors
    /// Link errors.
    pub async fn keep_alive(&mut self) -> Result<bool, MercuryError> {
        let now = Instant::now();
        if !self.session.is_idle() || self.session.poll_timeout().is_none_or(|t| now < t) {
            return Ok(false);
        }
        if !self.session.is_open(now) {
            self.session.handle_timeout(now);
            return Ok(false);
        }
        self.execute(Request::Test).await.map(|_| true)
    }

    /// Reads an energy array (16 bytes: A+, A−, R+, R−) for a tariff.
    ///
    /// # Errors
    /// See [`MercuryError`]; [`EnergyArray::PhasesFromReset`] is [`MercuryClient::read_phase_energy`].
    pub async fn read_energy(&mut self, array: EnergyArray, tariff: Tariff) -> Result<Energy, MercuryError> {
        let request = Request::ReadEnergy { array, tariff };
        let data = self.execute(request.clone()).await?;
        Energy::decode(&data).map_err(|e| self.decode_error(&request, e))
    }

    /// Reads A+ per phase from reset for a tariff.
    ///
    /// # Errors
    /// See [`MercuryError`].
    pub async fn read_phase_energy(&mut self, tariff: Tariff) -> Result<PhaseEnergy, MercuryError> {
        let request = Request::ReadEnergy { array: EnergyArray::PhasesFromReset, tariff };
        let data = self.execute(request.clone()).await?;
        PhaseEnergy::decode(&data).map_err(|e| self.decode_error(&request, e))
    }

    /// Reads one instantaneous value (`08 11`).
    ///
    /// # Errors
    /// See [`MercuryError`]; temperature is [`MercuryClient::read_temperature`].
    pub async fn read_instant(&mut self, bwri: Bwri) -> Result<InstantValue, MercuryError> {
        let request = Request::ReadInstant(bwri);
        let data = self.execute(request.clone()).await?;
        InstantValue::decode(bwri, &data).map_err(|e| self.decode_error(&request, e))
    }

    /// Reads a block of instantaneous values (`08 16`): from `bwri`'s phase up to phase 3.
    ///
    /// # Errors
    /// See [`MercuryError`].
    pub async fn read_instant_block(&mut self, bwri: Bwri) -> Result<Vec<InstantValue>, MercuryError> {
        let request = Request::ReadInstantBlock(bwri);
        let data = self.execute(request.clone()).await?;
        InstantValue::decode_block(bwri, &data).map_err(|e| self.decode_error(&request, e))
    }

    /// Reads the temperature inside the meter (°C).
    ///
    /// # Errors
    /// See [`MercuryError`].
    pub async fn read_temperature(&mut self) -> Result<i16, MercuryError> {
        let request = Request::ReadInstant(Bwri::TEMPERATURE);
        let data = self.execute(request.clone()).await?;
        decode_temperature(&data).map_err(|e| self.decode_error(&request, e))
    }

    /// Reads the serial number and manufacture date.
    ///
    /// # Errors
    /// See [`MercuryError`].
    pub async fn read_serial(&mut self) -> Result<SerialInfo, MercuryError> {
        let data = self.execute(Request::ReadSerial).await?;
        SerialInfo::decode(&data).map_err(|e| self.decode_error(&Request::ReadSerial, e))
    }

    /// Reads the meter clock.
    ///
    /// # Errors
    /// See [`MercuryError`].
    pub async fn read_time(&mut self) -> Result<MeterTime, MercuryError> {
        let data = self.execute(Request::ReadTime).await?;
        MeterTime::decode(&data).map_err(|e| self.decode_error(&Request::ReadTime, e))
    }

    /// Reads the variant (for the meter constant).
    ///
    /// # Errors
    /// See [`MercuryError`].
    pub async fn read_variant(&mut self) -> Result<Variant, MercuryError> {
        let data = self.execute(Request::ReadVariant).await?;
        Variant::decode(&data).map_err(|e| self.decode_error(&Request::ReadVariant, e))
    }

    /// Reads where the newest power-profile record is.
    ///
    /// # Errors
    /// See [`MercuryError`].
    pub async fn read_last_profile_record(&mut self) -> Result<LastRecord, MercuryError> {
        let data = self.execute(Request::ReadLastProfileRecord).await?;
        LastRecord::decode(&data).map_err(|e| self.decode_error(&Request::ReadLastProfileRecord, e))
    }

    /// Reads the power-profile records with `from < stamp <= to`, oldest first (see
    /// [`ProfileWalk`]): one `08 13`, then one `06 03` per record walked.
    ///
    /// # Errors
    /// See [`MercuryError`]. A record that does not decode (never-written memory) ends the walk instead.
    pub async fn read_power_profile(&mut self, from: Stamp, to: Stamp) -> Result<Vec<ProfileRecord>, MercuryError> {
        let last = self.read_last_profile_record().await?;
        let mut walk = ProfileWalk::new(last, from, to, self.profile_records);
        while let Some(address) = walk.next_address() {
            let data = self.execute(Request::profile_record(address)).await?;
            walk.handle_record(ProfileRecord::decode(&data).ok());
        }
        Ok(walk.finish())
    }
}
