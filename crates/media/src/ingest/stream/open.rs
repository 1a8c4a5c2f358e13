//! Opening an FFmpeg input whose probe allocates no frame above a pixel cap.
//!
//! `avformat_find_stream_info` decodes frames to learn a stream's parameters (up to 7
//! H.264 frames, for the decode delay), at whatever size the stream declares.
//! ffmpeg-next's `format::input*` functions give it no per-stream options, so a stream
//! declaring 8192x4320 had several frames of that size allocated before the size check
//! could refuse it. This open sequence is ffmpeg-next's (`input_with_interrupt_and_dictionary`,
//! `input_from_stream_with_interrupt`) with one change: the probe's decoders get
//! `max_pixels`, so FFmpeg refuses such a frame before allocating it.

use std::ffi::CString;
use std::ptr;

use ff::ffi;
use ffmpeg_next as ff;

/// Where an input's bytes come from.
pub(super) enum Source {
    /// A URL (or path) FFmpeg opens itself.
    Url(String),
    /// Bytes read through a custom I/O context (pushed segments).
    Io(ff::format::context::StreamIo),
}

/// Opens `source` with the format `options` and `interrupt`, probing its streams with
/// decoders capped at `max_pixels` pixels per frame.
pub(super) fn open<F>(
    source: Source,
    options: ff::Dictionary<'_>,
    max_pixels: u64,
    interrupt: F,
) -> Result<ff::format::context::Input, ff::Error>
where
    F: FnMut() -> bool + Send + 'static,
{
    let invalid = ff::Error::Other { errno: ffi::EINVAL };
    let (url, mut io) = match source {
        Source::Url(u) => (Some(CString::new(u).map_err(|_| invalid)?), None),
        Source::Io(io) if io.is_writable() => return Err(invalid),
        Source::Io(io) => (None, Some(io)),
    };
    let max = CString::new(max_pixels.to_string()).expect("digits have no NUL");
    // SAFETY: the sequence of ffmpeg-next's own `input_*` functions. The context is
    // allocated here; on a failed `avformat_open_input` FFmpeg frees it (and leaves a
    // custom `pb` alone, which `io` still owns and drops); on a failed probe it is
    // closed here; on success it is handed to `Input`, which owns it, the custom I/O
    // and the interrupt closure from then on. `per_stream` holds one dictionary per
    // stream present when the probe starts, as `avformat_find_stream_info` requires,
    // and each is freed after it.
    #[allow(unsafe_code)]
    unsafe {
        let mut ps = ffi::avformat_alloc_context();
        if ps.is_null() {
            return Err(ff::Error::Other { errno: ffi::ENOMEM });
        }
        let it = ff::util::interrupt::new(Box::new(interrupt));
        (*ps).interrupt_callback = it.interrupt;
        if let Some(io) = io.as_mut() {
            (*ps).pb = io.as_mut_ptr();
            (*ps).flags |= ffi::AVFMT_FLAG_CUSTOM_IO;
        }
        let mut opts = options.disown();
        let res = ffi::avformat_open_input(
            &mut ps,
            url.as_ref().map_or(ptr::null(), |u| u.as_ptr()),
            ptr::null(),
            &mut opts,
        );
        ff::Dictionary::own(opts);
        if res != 0 {
            return Err(ff::Error::from(res));
        }
        let n = (*ps).nb_streams as usize;
        let mut per_stream: Vec<*mut ffi::AVDictionary> = vec![ptr::null_mut(); n];
        for d in &mut per_stream {
            ffi::av_dict_set(d, c"max_pixels".as_ptr(), max.as_ptr(), 0);
        }
        let probed = ffi::avformat_find_stream_info(
            ps,
            if n == 0 {
                ptr::null_mut()
            } else {
                per_stream.as_mut_ptr()
            },
        );
        for d in &mut per_stream {
            ffi::av_dict_free(d);
        }
        if probed < 0 {
            ffi::avformat_close_input(&mut ps);
            return Err(ff::Error::from(probed));
        }
        Ok(match io {
            Some(io) => {
                ff::format::context::Input::wrap_with_custom_io_and_interrupt(ps, io, it.guard)
            }
            None => ff::format::context::Input::wrap_with_interrupt(ps, it.guard),
        })
    }
}
