//! Fault injection middleware: wraps any [`Transport`] and, driven by a seeded RNG, drops written frames,
//! corrupts one byte of a written frame, delays writes, and splits reads into small pieces.
//!
//! A "frame" is what one `poll_write` call is given: the link layer writes each request with one
//! `write_all`, and callers re-poll a pending write with the same buffer, as `AsyncWriteExt::write_all`
//! does. The same seed gives the same faults for the same sequence of calls, so a failing test replays.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::{BoxFuture, SerialSettings, Transport};

/// What to inject. Probabilities are per written frame, clamped to `0.0..=1.0` (NaN counts as 0).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// RNG seed. Default 0.
    pub seed: u64,
    /// Probability that a written frame is silently dropped (reported as written). Default 0.
    pub drop_write: f64,
    /// Probability that one byte of a written frame is flipped. Default 0.
    pub corrupt_write: f64,
    /// Probability that a written frame is held back for [`FaultConfig::delay`]. Default 0.
    pub delay_write: f64,
    /// How long a delayed frame is held back. Default 0.
    pub delay: Duration,
    /// When set, each read returns at most a random 1..=n bytes. Default none.
    pub max_read_chunk: Option<usize>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            drop_write: 0.0,
            corrupt_write: 0.0,
            delay_write: 0.0,
            delay: Duration::ZERO,
            max_read_chunk: None,
        }
    }
}

/// How many faults were injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Frames written by the caller.
    pub frames: u64,
    /// Frames dropped.
    pub dropped: u64,
    /// Frames with one byte flipped.
    pub corrupted: u64,
    /// Frames delayed.
    pub delayed: u64,
    /// Reads cut shorter than the caller's buffer allowed.
    pub split_reads: u64,
}

struct PendingWrite {
    frame: Vec<u8>,
    written: usize,
    reported: usize,
}

/// A [`Transport`] wrapper that injects faults.
pub struct FaultInjector<T> {
    inner: T,
    config: FaultConfig,
    rng: StdRng,
    pending: Option<PendingWrite>,
    sleep: Option<Pin<Box<Sleep>>>,
    next_chunk: Option<usize>,
    scratch: Vec<u8>,
    stats: FaultStats,
}

fn probability(p: f64) -> f64 {
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 1.0)
    }
}

impl<T: Transport> FaultInjector<T> {
    /// Wraps `inner` with the faults in `config`.
    pub fn new(inner: T, mut config: FaultConfig) -> Self {
        config.drop_write = probability(config.drop_write);
        config.corrupt_write = probability(config.corrupt_write);
        config.delay_write = probability(config.delay_write);
        config.max_read_chunk = config.max_read_chunk.map(|n| n.max(1));
        let rng = StdRng::seed_from_u64(config.seed);
        Self {
            inner,
            config,
            rng,
            pending: None,
            sleep: None,
            next_chunk: None,
            scratch: Vec::new(),
            stats: FaultStats::default(),
        }
    }

    /// Faults injected so far.
    pub fn stats(&self) -> FaultStats {
        self.stats
    }

    /// The wrapped transport.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Unwraps the inner transport.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// Decides the fate of a new frame. Returns `None` when it is dropped.
    fn start_frame(&mut self, buf: &[u8]) -> Option<PendingWrite> {
        self.stats.frames += 1;
        if self.rng.gen_bool(self.config.drop_write) {
            self.stats.dropped += 1;
            tracing::debug!(media = %self.inner.describe(), len = buf.len(), "fault: dropped written frame");
            return None;
        }
        let mut frame = buf.to_vec();
        if !frame.is_empty() && self.rng.gen_bool(self.config.corrupt_write) {
            let at = self.rng.gen_range(0..frame.len());
            let flip: u8 = self.rng.gen_range(1..=0xff);
            if let Some(b) = frame.get_mut(at) {
                *b ^= flip;
            }
            self.stats.corrupted += 1;
            tracing::debug!(media = %self.inner.describe(), at, flip, "fault: corrupted written frame");
        }
        if self.rng.gen_bool(self.config.delay_write) {
            self.stats.delayed += 1;
            self.sleep = Some(Box::pin(tokio::time::sleep(self.config.delay)));
        }
        Some(PendingWrite { frame, written: 0, reported: buf.len() })
    }
}

impl<T: Transport> AsyncWrite for FaultInjector<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            match this.start_frame(buf) {
                Some(p) => this.pending = Some(p),
                None => return Poll::Ready(Ok(buf.len())),
            }
        }
        if let Some(sleep) = this.sleep.as_mut() {
            ready!(sleep.as_mut().poll(cx));
            this.sleep = None;
        }
        loop {
            let Some(p) = this.pending.as_mut() else {
                return Poll::Ready(Ok(buf.len()));
            };
            let Some(rest) = p.frame.get(p.written..).filter(|r| !r.is_empty()) else {
                let reported = p.reported;
                this.pending = None;
                return Poll::Ready(Ok(reported));
            };
            match ready!(Pin::new(&mut this.inner).poll_write(cx, rest)) {
                Ok(0) => {
                    this.pending = None;
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => p.written += n,
                Err(e) => {
                    this.pending = None;
                    return Poll::Ready(Err(e));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T: Transport> AsyncRead for FaultInjector<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(max) = this.config.max_read_chunk else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        let want = buf.remaining();
        // Choose the size once per completed read, so re-polls while pending keep the same decision.
        let limit = *this.next_chunk.get_or_insert_with(|| this.rng.gen_range(1..=max));
        if limit >= want {
            let res = ready!(Pin::new(&mut this.inner).poll_read(cx, buf));
            this.next_chunk = None;
            return Poll::Ready(res);
        }
        this.scratch.resize(limit, 0);
        let mut small = ReadBuf::new(&mut this.scratch);
        let res = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut small));
        this.next_chunk = None;
        res?;
        if !small.filled().is_empty() {
            this.stats.split_reads += 1;
        }
        // invariant: `small` holds at most `limit < want = buf.remaining()` bytes, so this cannot overflow.
        buf.put_slice(small.filled());
        Poll::Ready(Ok(()))
    }
}

impl<T: Transport> Transport for FaultInjector<T> {
    fn discard_input(&mut self) -> io::Result<usize> {
        self.inner.discard_input()
    }

    fn reconnect(&mut self) -> BoxFuture<'_, io::Result<()>> {
        self.pending = None;
        self.sleep = None;
        self.inner.reconnect()
    }

    fn set_line(&mut self, settings: &SerialSettings) -> io::Result<()> {
        self.inner.set_line(settings)
    }

    fn describe(&self) -> String {
        format!("fault({})", self.inner.describe())
    }

    fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loopback;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(i: u8) -> [u8; 8] {
        [i, 0x03, 0x00, 0x00, 0x00, 0x02, 0xaa, 0x55]
    }

    #[tokio::test]
    async fn no_faults_is_transparent() {
        let (a, mut b) = loopback::pair();
        let mut f = FaultInjector::new(a, FaultConfig::default());
        for i in 0..20 {
            f.write_all(&frame(i)).await.unwrap();
            let mut got = [0u8; 8];
            b.read_exact(&mut got).await.unwrap();
            assert_eq!(got, frame(i));
        }
        assert_eq!(f.stats(), FaultStats { frames: 20, ..FaultStats::default() });
        assert_eq!(f.describe(), "fault(loopback:a)");
    }

    #[tokio::test]
    async fn drops_every_frame_at_probability_one() {
        let (a, mut b) = loopback::pair();
        let mut f = FaultInjector::new(a, FaultConfig { drop_write: 1.0, ..FaultConfig::default() });
        f.write_all(&frame(1)).await.unwrap();
        f.write_all(&frame(2)).await.unwrap();
        assert_eq!(b.discard_input().unwrap(), 0, "nothing reached the peer");
        assert_eq!(f.stats().dropped, 2);
    }

    #[tokio::test]
    async fn corrupts_exactly_one_byte_per_frame() {
        let (a, mut b) = loopback::pair();
        let mut f = FaultInjector::new(a, FaultConfig { corrupt_write: 1.0, seed: 7, ..FaultConfig::default() });
        for i in 0..50 {
            f.write_all(&frame(i)).await.unwrap();
            let mut got = [0u8; 8];
            b.read_exact(&mut got).await.unwrap();
            let diffs = got.iter().zip(frame(i)).filter(|(x, y)| **x != *y).count();
            assert_eq!(diffs, 1, "frame {i}: {got:02x?}");
        }
        assert_eq!(f.stats().corrupted, 50);
    }

    #[tokio::test]
    async fn the_same_seed_gives_the_same_faults() {
        async fn run(seed: u64) -> Vec<Vec<u8>> {
            let (a, mut b) = loopback::pair();
            let cfg = FaultConfig { seed, drop_write: 0.3, corrupt_write: 0.3, ..FaultConfig::default() };
            let mut f = FaultInjector::new(a, cfg);
            for i in 0..40 {
                f.write_all(&frame(i)).await.unwrap();
            }
            drop(f);
            let mut all = Vec::new();
            b.read_to_end(&mut all).await.unwrap();
            all.chunks(8).map(<[u8]>::to_vec).collect()
        }
        let x = run(42).await;
        let y = run(42).await;
        let z = run(43).await;
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert!(x.len() < 40, "some frames were dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn delays_writes() {
        let (a, mut b) = loopback::pair();
        let cfg = FaultConfig { delay_write: 1.0, delay: Duration::from_millis(250), ..FaultConfig::default() };
        let mut f = FaultInjector::new(a, cfg);
        let start = tokio::time::Instant::now();
        f.write_all(&frame(1)).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(250));
        let mut got = [0u8; 8];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got, frame(1));
        assert_eq!(f.stats().delayed, 1);
    }

    #[tokio::test]
    async fn splits_reads_but_loses_nothing() {
        let (a, mut b) = loopback::pair();
        let mut f = FaultInjector::new(a, FaultConfig { max_read_chunk: Some(3), seed: 1, ..FaultConfig::default() });
        let data: Vec<u8> = (0..=255).collect();
        b.write_all(&data).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < data.len() {
            let n = f.read(&mut buf).await.unwrap();
            assert!((1..=3).contains(&n), "read {n} bytes");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, data);
        assert!(f.stats().split_reads >= 256 / 3);
    }
}
