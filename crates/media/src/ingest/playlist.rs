//! HLS playlists (RFC 8216): the parts a live monitor needs. Pure parsing, no I/O.
//!
//! A media playlist gives segment URIs with their sequence numbers (from
//! `#EXT-X-MEDIA-SEQUENCE`), durations, discontinuities, the fMP4 initialisation
//! section (`#EXT-X-MAP`), the target duration (which paces reloads) and whether the
//! playlist has ended (`#EXT-X-ENDLIST`: VOD, or a finished live stream). A master
//! playlist lists variant streams; the monitor follows one of them. Anything that is
//! not a playlist is an error naming the line, and so are the features the monitor
//! cannot decode: encrypted segments (`#EXT-X-KEY` with a method) and byte ranges
//! (`#EXT-X-BYTERANGE`). Low-latency parts (`#EXT-X-PART`) are skipped: the full
//! segments are fetched.
//!
//! Parsing is bounded for hostile input: lines longer than [`MAX_LINE`] bytes and more
//! than [`MAX_ENTRIES`] segments or variants are errors, and the initialisation section's
//! URI is shared by every segment under it, not copied.

use std::sync::Arc;

/// The longest line accepted, in bytes (URIs included).
pub const MAX_LINE: usize = 8192;

/// The most segments (or variants) one playlist may list (2 days of 2 s segments).
pub const MAX_ENTRIES: usize = 100_000;

/// One media segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Media sequence number.
    pub sequence: u64,
    /// URI, relative to the playlist.
    pub uri: String,
    /// Duration in seconds (`#EXTINF`).
    pub duration: f64,
    /// A discontinuity precedes this segment.
    pub discontinuity: bool,
    /// The initialisation section in force (`#EXT-X-MAP` URI), if any; shared by
    /// every segment it applies to.
    pub map: Option<Arc<str>>,
}

/// A media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    /// `#EXT-X-TARGETDURATION` in seconds.
    pub target_duration: f64,
    /// Sequence number of the first segment.
    pub media_sequence: u64,
    /// The segments, in order.
    pub segments: Vec<Segment>,
    /// `#EXT-X-ENDLIST` seen.
    pub ended: bool,
}

/// A variant of a master playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Its media playlist URI.
    pub uri: String,
    /// `BANDWIDTH`, bits per second.
    pub bandwidth: u64,
}

/// A parsed playlist.
#[derive(Debug, Clone, PartialEq)]
pub enum Playlist {
    /// Segments.
    Media(MediaPlaylist),
    /// Variants.
    Master(Vec<Variant>),
}

/// Why a text is not a usable playlist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("playlist line {line}: {reason}")]
pub struct PlaylistError {
    /// 1-based line (0 for the whole text).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

fn err(line: usize, reason: impl Into<String>) -> PlaylistError {
    PlaylistError {
        line,
        reason: reason.into(),
    }
}

/// Value of `KEY=value` or `KEY="value"` in an attribute list.
fn attribute<'a>(list: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = list;
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], quoted[end + 1..].trim_start_matches(','))
        } else {
            match after.split_once(',') {
                Some((v, t)) => (v, t),
                None => (after, ""),
            }
        };
        if name.trim() == key {
            return Some(value);
        }
        rest = tail;
    }
    None
}

/// Parses a playlist.
pub fn parse(text: &str) -> Result<Playlist, PlaylistError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    match lines.next() {
        Some((_, "#EXTM3U")) => {}
        _ => return Err(err(1, "not an HLS playlist (no #EXTM3U header)")),
    }
    let mut target_duration = None;
    let mut media_sequence = 0u64;
    let mut segments = Vec::new();
    let mut variants = Vec::new();
    let mut ended = false;
    let mut pending_duration: Option<f64> = None;
    let mut pending_discontinuity = false;
    let mut pending_variant: Option<u64> = None;
    let mut map: Option<Arc<str>> = None;
    for (n, line) in lines {
        if line.is_empty() {
            continue;
        }
        if line.len() > MAX_LINE {
            return Err(err(n, format!("line longer than {MAX_LINE} bytes")));
        }
        if segments.len() + variants.len() >= MAX_ENTRIES && !line.starts_with('#') {
            return Err(err(
                n,
                format!("more than {MAX_ENTRIES} segments or variants"),
            ));
        }
        if let Some(tag) = line.strip_prefix("#EXT") {
            let (name, value) = tag.split_once(':').unwrap_or((tag, ""));
            match name {
                "-X-TARGETDURATION" => {
                    let v: f64 = value
                        .trim()
                        .parse()
                        .map_err(|_| err(n, format!("bad target duration {value:?}")))?;
                    if !(v.is_finite() && v > 0.0 && v < 86_400.0) {
                        return Err(err(n, format!("target duration {v} out of range")));
                    }
                    target_duration = Some(v);
                }
                "-X-MEDIA-SEQUENCE" => {
                    media_sequence = value
                        .trim()
                        .parse()
                        .map_err(|_| err(n, format!("bad media sequence {value:?}")))?;
                }
                "INF" => {
                    let d = value.split(',').next().unwrap_or("").trim();
                    let d: f64 = d
                        .parse()
                        .map_err(|_| err(n, format!("bad segment duration {d:?}")))?;
                    if !(d.is_finite() && d >= 0.0) {
                        return Err(err(n, format!("segment duration {d} out of range")));
                    }
                    pending_duration = Some(d);
                }
                "-X-DISCONTINUITY" => pending_discontinuity = true,
                "-X-ENDLIST" => ended = true,
                "-X-KEY" => {
                    let method = attribute(value, "METHOD").unwrap_or("").trim();
                    if method != "NONE" {
                        return Err(err(
                            n,
                            format!(
                                "encrypted segments (#EXT-X-KEY METHOD={method}) are not supported"
                            ),
                        ));
                    }
                }
                "-X-BYTERANGE" => {
                    return Err(err(
                        n,
                        "byte-range segments (#EXT-X-BYTERANGE) are not supported",
                    ));
                }
                // Low-latency HLS parts: the full segments they add up to are listed
                // too, and those are what is fetched (parts only lower the latency).
                "-X-PART" | "-X-PRELOAD-HINT" | "-X-PART-INF" => {}
                "-X-MAP" => {
                    let uri =
                        attribute(value, "URI").ok_or_else(|| err(n, "#EXT-X-MAP without URI"))?;
                    map = Some(Arc::from(uri));
                }
                "-X-STREAM-INF" => {
                    let bw = attribute(value, "BANDWIDTH")
                        .ok_or_else(|| err(n, "#EXT-X-STREAM-INF without BANDWIDTH"))?;
                    pending_variant = Some(
                        bw.trim()
                            .parse()
                            .map_err(|_| err(n, format!("bad bandwidth {bw:?}")))?,
                    );
                }
                _ => {} // Other tags (version, program date time, ...) do not matter here.
            }
            continue;
        }
        if line.starts_with('#') {
            continue; // comment
        }
        if line.chars().any(char::is_control) {
            return Err(err(n, "control character in URI"));
        }
        if let Some(bandwidth) = pending_variant.take() {
            variants.push(Variant {
                uri: line.to_owned(),
                bandwidth,
            });
            continue;
        }
        let duration = pending_duration
            .take()
            .ok_or_else(|| err(n, format!("URI {line:?} without #EXTINF")))?;
        let sequence = media_sequence
            .checked_add(segments.len() as u64)
            .ok_or_else(|| err(n, "media sequence overflows"))?;
        segments.push(Segment {
            sequence,
            uri: line.to_owned(),
            duration,
            discontinuity: std::mem::take(&mut pending_discontinuity),
            map: map.clone(),
        });
    }
    if !variants.is_empty() {
        if !segments.is_empty() {
            return Err(err(0, "a playlist cannot list both variants and segments"));
        }
        return Ok(Playlist::Master(variants));
    }
    let target_duration =
        target_duration.ok_or_else(|| err(0, "media playlist without #EXT-X-TARGETDURATION"))?;
    Ok(Playlist::Media(MediaPlaylist {
        target_duration,
        media_sequence,
        segments,
        ended,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_media_playlist() {
        let text = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:41\n\
                    #EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.000,\nseg41.m4s\n#EXT-X-DISCONTINUITY\n\
                    #EXTINF:1.5,title\nseg42.m4s\n";
        let Playlist::Media(p) = parse(text).unwrap() else {
            panic!()
        };
        assert_eq!(p.target_duration, 2.0);
        assert!(!p.ended);
        assert_eq!(p.segments.len(), 2);
        assert_eq!((p.segments[0].sequence, p.segments[1].sequence), (41, 42));
        assert!(p.segments[1].discontinuity && !p.segments[0].discontinuity);
        assert_eq!(p.segments[1].duration, 1.5);
        assert_eq!(p.segments[0].map.as_deref(), Some("init.mp4"));
    }

    #[test]
    fn master_playlist_and_errors() {
        let text = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1280000,RESOLUTION=1280x720\nhi.m3u8\n\
                    #EXT-X-STREAM-INF:CODECS=\"avc1.4d401f,mp4a.40.2\",BANDWIDTH=640000\nlo.m3u8\n";
        assert_eq!(
            parse(text).unwrap(),
            Playlist::Master(vec![
                Variant {
                    uri: "hi.m3u8".into(),
                    bandwidth: 1_280_000
                },
                Variant {
                    uri: "lo.m3u8".into(),
                    bandwidth: 640_000
                },
            ])
        );
        assert_eq!(parse("<html>").unwrap_err().line, 1);
        assert_eq!(
            parse("#EXTM3U\n#EXT-X-TARGETDURATION:2\nseg.ts\n")
                .unwrap_err()
                .line,
            3
        );
        assert_eq!(parse("#EXTM3U\n#EXTINF:x,\nseg.ts\n").unwrap_err().line, 2);
        assert_eq!(parse("#EXTM3U\n#EXTINF:1,\nseg.ts\n").unwrap_err().line, 0);
    }

    /// The attack from the security review: a 1 MB playlist whose long `#EXT-X-MAP`
    /// URI applies to every segment. The URI is shared, not copied per segment.
    #[test]
    fn a_long_map_uri_is_shared_by_its_segments() {
        let uri = "m".repeat(MAX_LINE - 40);
        let mut text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"{uri}\"\n");
        while text.len() < 1 << 20 {
            text.push_str("#EXTINF:2,\ns.ts\n");
        }
        let Playlist::Media(p) = parse(&text).unwrap() else {
            panic!("media playlist expected");
        };
        assert!(p.segments.len() > 60_000, "{}", p.segments.len());
        let first = p.segments[0].map.as_ref().unwrap();
        assert_eq!(first.len(), uri.len());
        assert!(
            p.segments
                .iter()
                .all(|s| std::ptr::eq(s.map.as_deref().unwrap(), first.as_ref()))
        );
    }

    #[test]
    fn long_lines_and_too_many_segments_are_refused() {
        let long = format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{}\n",
            "u".repeat(MAX_LINE + 1)
        );
        assert_eq!(
            parse(&long).unwrap_err(),
            err(4, format!("line longer than {MAX_LINE} bytes"))
        );
        let mut many = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:2\n");
        for _ in 0..=MAX_ENTRIES {
            many.push_str("#EXTINF:2,\ns.ts\n");
        }
        let e = parse(&many).unwrap_err();
        assert_eq!(e.line, 2 + 2 * (MAX_ENTRIES + 1));
        assert!(e.reason.contains("more than 100000"), "{e}");
        // Exactly the cap is fine.
        let mut at_cap = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:2\n");
        for _ in 0..MAX_ENTRIES {
            at_cap.push_str("#EXTINF:2,\ns.ts\n");
        }
        let Playlist::Media(p) = parse(&at_cap).unwrap() else {
            panic!("media playlist expected");
        };
        assert_eq!(p.segments.len(), MAX_ENTRIES);
    }

    #[test]
    fn encryption_and_byte_ranges_are_refused_loudly() {
        let head = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n";
        let key = format!("{head}#EXT-X-KEY:METHOD=AES-128,URI=\"k.bin\"\n#EXTINF:2,\ns.ts\n");
        assert_eq!(
            parse(&key).unwrap_err(),
            err(
                3,
                "encrypted segments (#EXT-X-KEY METHOD=AES-128) are not supported"
            )
        );
        let none = format!("{head}#EXT-X-KEY:METHOD=NONE\n#EXTINF:2,\ns.ts\n");
        assert!(matches!(parse(&none), Ok(Playlist::Media(_))));
        let range = format!("{head}#EXTINF:2,\n#EXT-X-BYTERANGE:1000@0\nall.ts\n");
        assert_eq!(
            parse(&range).unwrap_err(),
            err(
                4,
                "byte-range segments (#EXT-X-BYTERANGE) are not supported"
            )
        );
        let ll = format!(
            "{head}#EXT-X-PART-INF:PART-TARGET=0.5\n#EXTINF:2,\ns1.ts\n#EXT-X-PART:DURATION=0.5,URI=\"p1.ts\"\n"
        );
        let Ok(Playlist::Media(p)) = parse(&ll) else {
            panic!("LL-HLS playlist refused");
        };
        assert_eq!(p.segments.len(), 1);
        assert_eq!(p.segments[0].uri, "s1.ts");
    }
}
