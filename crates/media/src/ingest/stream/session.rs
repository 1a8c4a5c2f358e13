//! One FFmpeg demuxer session of a stream: open the source (with a protocol whitelist,
//! an interrupt for cancellation and read timeouts), refuse an oversized video before
//! its decoder opens, decode, and turn sampled frames into [`SampledFrame`]s. What to
//! sample and on which media time is decided by the pure [`super::sampling`] types.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ffmpeg_next as ff;

use super::open::{self, Source};
use super::sampling::{Sampler, Timeline};
use super::worker::{SessionEnd, Worker};
use super::{
    NO_PROTOCOLS, Pixels, SampledFrame, SegmentReader, StreamConfig, StreamError, StreamState,
    now_ms, protocol_whitelist,
};
use crate::convert::{Conversion, RgbConverter, fit};

/// Per-stream state that survives reconnects and discontinuities.
pub(super) struct Continuity {
    timeline: Timeline,
    sampler: Sampler,
    converter: RgbConverter,
    /// The next sampled frame's index.
    index: u64,
}

impl Continuity {
    pub(super) fn new(config: &StreamConfig) -> Self {
        Continuity {
            timeline: Timeline::new(config.max_pts_step.as_secs_f64()),
            sampler: Sampler::new(config.sampling, config.degrade_after),
            converter: RgbConverter::new(Conversion::Native),
            index: 0,
        }
    }
}

/// Converts a session's timestamps to seconds from its start.
struct SessionClock {
    time_base: f64,
    start: f64,
}

/// The width and height the container or FFmpeg's probe declared for a stream (0 when
/// unknown).
fn declared_size(params: &ff::codec::Parameters) -> (u32, u32) {
    // SAFETY: `params` holds a valid AVCodecParameters for as long as it lives; two
    // integer fields are read.
    #[allow(unsafe_code)]
    let (w, h) = unsafe {
        let p = params.as_ptr();
        ((*p).width, (*p).height)
    };
    (w.max(0) as u32, h.max(0) as u32)
}

/// Refuses a size beyond `max`.
fn check_size((width, height): (u32, u32), max: (u32, u32)) -> Result<(), StreamError> {
    let (max_width, max_height) = max;
    if width > max_width || height > max_height {
        return Err(StreamError::TooLarge {
            width,
            height,
            max_width,
            max_height,
        });
    }
    Ok(())
}

impl Worker {
    /// An interrupt closure: cancel, or no I/O progress for `read_timeout`.
    fn interrupt(&self, progress: Arc<AtomicU64>) -> impl FnMut() -> bool + Send + 'static {
        let cancel = self.cancel.clone();
        let timeout = self.config.read_timeout.as_millis() as u64;
        move || {
            cancel.load(Ordering::Acquire)
                || now_ms().saturating_sub(progress.load(Ordering::Acquire)) > timeout
        }
    }

    /// The most pixels a decoded frame may have (the maximum input's), for the probe's
    /// decoders and the stream's.
    fn max_pixels(&self) -> u64 {
        let (w, h) = self.config.max_input;
        u64::from(w) * u64::from(h)
    }

    pub(super) fn session_url(&self, url: &str, cont: &mut Continuity) -> SessionEnd {
        let progress = Arc::new(AtomicU64::new(now_ms()));
        let Some(protocols) = protocol_whitelist(url) else {
            self.counters.open_errors.fetch_add(1, Ordering::Relaxed);
            return SessionEnd::Fatal(StreamError::UnsupportedProtocol {
                url: url.to_owned(),
            });
        };
        let mut opts = ff::Dictionary::new();
        opts.set("protocol_whitelist", protocols);
        // Network sources: give up a dead connection instead of waiting forever.
        opts.set(
            "rw_timeout",
            &(self.config.read_timeout.as_micros()).to_string(),
        );
        let input = open::open(
            Source::Url(url.to_owned()),
            opts,
            self.max_pixels(),
            self.interrupt(progress.clone()),
        );
        match input {
            Ok(input) => self.decode(input, cont, &progress),
            Err(_) if self.is_cancelled() => SessionEnd::Cancelled,
            Err(error) => {
                self.counters.open_errors.fetch_add(1, Ordering::Relaxed);
                let why = StreamError::Open {
                    url: url.to_owned(),
                    error,
                };
                if url.contains("://") && !url.starts_with("file:") {
                    SessionEnd::Broken(why)
                } else {
                    SessionEnd::Fatal(why)
                }
            }
        }
    }

    pub(super) fn session_segments(
        &self,
        reader: &Arc<Mutex<SegmentReader>>,
        cont: &mut Continuity,
    ) -> SessionEnd {
        let progress = Arc::new(AtomicU64::new(now_ms()));
        // Pushed segments wait for the platform, not a socket: only cancellation
        // interrupts them (the watchdog reports the stall). The reader checks it
        // between its waits, FFmpeg between its reads.
        let cancel = self.cancel.clone();
        let shared = SharedReader {
            reader: reader.clone(),
            cancel: cancel.clone(),
        };
        let io = match ff::format::context::StreamIo::from_read(shared) {
            Ok(io) => io,
            Err(e) => return SessionEnd::Fatal(StreamError::CustomIo(e)),
        };
        // The bytes come from the platform: no demuxer may open anything else (an
        // HLS or concat manifest pushed as a segment would otherwise name files or
        // URLs for FFmpeg to open).
        let mut opts = ff::Dictionary::new();
        opts.set("protocol_whitelist", NO_PROTOCOLS);
        match open::open(Source::Io(io), opts, self.max_pixels(), move || {
            cancel.load(Ordering::Acquire)
        }) {
            Ok(input) => self.decode(input, cont, &progress),
            Err(_) if self.is_cancelled() => SessionEnd::Cancelled,
            Err(e) => SessionEnd::Broken(StreamError::OpenSegments(e)),
        }
    }

    /// Opens the video decoder of `input`, refusing a declared size beyond
    /// `max_input` before it opens and capping the pixels it will allocate.
    fn open_decoder(
        &self,
        stream: &ff::format::stream::Stream<'_>,
    ) -> Result<ff::decoder::Video, StreamError> {
        let params = stream.parameters();
        check_size(declared_size(&params), self.config.max_input)?;
        let mut ctx = ff::codec::context::Context::from_parameters(params)
            .map_err(StreamError::Parameters)?;
        let Some(codec) = ff::codec::decoder::find(ctx.id()) else {
            return Err(StreamError::UnknownCodec(ctx.id()));
        };
        ctx.set_threading(ff::threading::Config {
            kind: ff::threading::Type::Frame,
            count: self.config.threads,
            ..Default::default()
        });
        // Whatever the stream says later (a new sequence header mid-stream), the decoder
        // allocates no frame of more pixels than the maximum input.
        let mut opts = ff::Dictionary::new();
        opts.set("max_pixels", &self.max_pixels().to_string());
        ctx.decoder()
            .open_as_with(codec, opts)
            .and_then(|d| d.video())
            .map_err(StreamError::DecoderOpen)
    }

    fn decode(
        &self,
        mut input: ff::format::context::Input,
        cont: &mut Continuity,
        progress: &AtomicU64,
    ) -> SessionEnd {
        let Some(stream) = input.streams().best(ff::media::Type::Video) else {
            return SessionEnd::Fatal(StreamError::NoVideo);
        };
        let index = stream.index();
        let start = stream.start_time();
        let time_base = f64::from(stream.time_base());
        let clock = SessionClock {
            time_base,
            start: if start != ff::ffi::AV_NOPTS_VALUE {
                start as f64 * time_base
            } else {
                0.0
            },
        };
        let mut decoder = match self.open_decoder(&stream) {
            Ok(d) => d,
            Err(why) => return SessionEnd::Fatal(why),
        };
        let keyframes_only = cont.sampler.keyframes_only();
        if keyframes_only {
            decoder.skip_frame(ff::Discard::NonKey);
        }
        // Per-second sampling: a frame that comes before the next sampling time and that
        // no other frame refers to is not decoded (`skip_frame = NONREF` for its
        // packet). Reference frames are always decoded, so sampled pixels are unchanged.
        let mut skipping = false;
        cont.timeline.restart();
        let mut frame = ff::frame::Video::empty();
        let mut end = SessionEnd::Eof;
        loop {
            // A fresh packet for every read: `av_read_frame` does not unreference the
            // packet it is given, so a reused packet leaked every buffer it had held
            // (a pushed stream's whole bytes, kept after it ended). Dropping the packet
            // unreferences its buffer.
            let mut packet = ff::Packet::empty();
            match packet.read(&mut input) {
                Ok(()) => {
                    progress.store(now_ms(), Ordering::Release);
                    if packet.stream() != index {
                        continue;
                    }
                    if !keyframes_only && !cont.sampler.keyframes_only() {
                        let skip = packet
                            .pts()
                            .and_then(|p| {
                                cont.timeline
                                    .predict(p as f64 * clock.time_base - clock.start)
                            })
                            .is_some_and(|t| cont.sampler.skips(t));
                        if skip != skipping {
                            skipping = skip;
                            decoder.skip_frame(if skip {
                                ff::Discard::NonReference
                            } else {
                                ff::Discard::Default
                            });
                        }
                    }
                    if decoder.send_packet(&packet).is_err() {
                        self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                        // A stream that grew past the maximum mid-stream: the decoder
                        // refused to allocate its frames (its pixel cap) but knows the
                        // new size, which is the reason to give.
                        let size = (decoder.width(), decoder.height());
                        if let Err(why) = check_size(size, self.config.max_input) {
                            return SessionEnd::Fatal(why);
                        }
                        continue;
                    }
                }
                Err(ff::Error::Eof) => break,
                Err(ff::Error::InvalidData) => {
                    self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(ff::Error::Exit) => {
                    end = if self.is_cancelled() {
                        SessionEnd::Cancelled
                    } else {
                        SessionEnd::Broken(StreamError::ReadTimeout)
                    };
                    break;
                }
                Err(e) => {
                    end = SessionEnd::Broken(StreamError::Read(e));
                    break;
                }
            }
            while decoder.receive_frame(&mut frame).is_ok() {
                if let Err(why) = self.on_frame(&frame, &clock, cont, &mut decoder) {
                    return SessionEnd::Fatal(why);
                }
            }
        }
        if matches!(end, SessionEnd::Eof) && decoder.send_eof().is_ok() {
            while decoder.receive_frame(&mut frame).is_ok() {
                if let Err(why) = self.on_frame(&frame, &clock, cont, &mut decoder) {
                    return SessionEnd::Fatal(why);
                }
            }
        }
        end
    }

    fn on_frame(
        &self,
        frame: &ff::frame::Video,
        clock: &SessionClock,
        cont: &mut Continuity,
        decoder: &mut ff::decoder::Video,
    ) -> Result<(), StreamError> {
        self.counters.decoded.fetch_add(1, Ordering::Relaxed);
        let raw = frame
            .timestamp()
            .or(frame.pts())
            .map(|t| t as f64 * clock.time_base - clock.start);
        let (pts, jump) = cont.timeline.place(raw);
        if let Some(jump) = jump {
            self.counters.pts_jumps.fetch_add(1, Ordering::Relaxed);
            self.counters
                .discontinuities
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(stream = %self.id, ?jump, media_time = pts, "timestamp jump: media time continues one frame on");
        }
        if !cont.sampler.take(pts) {
            return Ok(());
        }
        let size = (frame.width(), frame.height());
        check_size(size, self.config.max_input)?;
        let out = fit(size.0, size.1, self.config.max_output);
        let (width, height, pixels) = if self.config.rgb.load(Ordering::Relaxed) {
            let rgb = cont
                .converter
                .convert(frame, out)
                .map_err(StreamError::Convert)?;
            (rgb.width, rgb.height, Pixels::Rgb24(rgb.packed().into()))
        } else {
            let yuv = cont
                .converter
                .planes(frame, out)
                .map_err(StreamError::Convert)?;
            (
                yuv.width(),
                yuv.height(),
                Pixels::Yuv420(yuv.packed().into()),
            )
        };
        let wall_ms = now_ms();
        let arrival_ms = self.arrival.as_ref().and_then(|a| a.arrival_ms());
        let origin_ms = self.arrival.as_ref().and_then(|a| a.origin_ms());
        let sampled = SampledFrame {
            arrival_ms,
            origin_ms,
            stream_id: self.id.clone(),
            index: cont.index,
            pts,
            wall_ms,
            keyframe: frame.is_key(),
            width,
            height,
            pixels,
        };
        cont.index += 1;
        self.counters.sampled.fetch_add(1, Ordering::Relaxed);
        self.counters
            .last_frame_ms
            .store(wall_ms, Ordering::Release);
        if let Some(at) = arrival_ms {
            let lag = wall_ms.saturating_sub(at) + 1;
            self.counters.lag_ms_plus_one.store(lag, Ordering::Relaxed);
        }
        self.set_state(StreamState::Live);
        // Pushed bytes were accepted: a burst of them is analysed in full, the
        // decoder waiting for the detectors while it is less than `max_lag` behind
        // their arrival. Past that (and for pulled sources) the oldest frame gives way.
        let dropped = match arrival_ms {
            Some(at) => {
                let behind = Duration::from_millis(wall_ms.saturating_sub(at));
                let wait = self.config.max_lag.saturating_sub(behind);
                self.frames.push_by(sampled, Instant::now() + wait)
            }
            None => self.frames.push(sampled),
        };
        if dropped.is_some() {
            self.counters
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
            if cont.sampler.dropped() {
                self.counters.degraded.fetch_add(1, Ordering::Relaxed);
                decoder.skip_frame(ff::Discard::NonKey);
                tracing::warn!(stream = %self.id, "detectors behind: degrading to keyframes only");
            }
        }
        Ok(())
    }
}

/// A [`SegmentReader`] shared across demuxer sessions (each session's custom I/O
/// owns one of these; the reader itself outlives them).
struct SharedReader {
    reader: Arc<Mutex<SegmentReader>>,
    cancel: Arc<std::sync::atomic::AtomicBool>,
}

impl std::io::Read for SharedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // The reader returns `Interrupted` between its waits, and the custom I/O
        // retries: cancellation ends the retries here.
        if self.cancel.load(Ordering::Acquire) {
            return Err(std::io::Error::other("cancelled"));
        }
        self.reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_beyond_either_side_of_the_maximum_are_refused() {
        assert!(check_size((320, 240), (320, 240)).is_ok());
        assert!(
            check_size((0, 0), (320, 240)).is_ok(),
            "unknown is not refused"
        );
        let e = check_size((640, 480), (320, 240)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "resolution 640x480 above the maximum 320x240"
        );
        assert!(check_size((322, 16), (320, 240)).is_err());
        assert!(check_size((16, 242), (320, 240)).is_err());
    }
}
