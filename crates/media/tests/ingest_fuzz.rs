//! Property tests over hostile input: the playlist parser and the segment sequencer
//! never panic, and the sequencer never loses, duplicates or reorders what it releases;
//! random bytes pushed as segments end the stream cleanly. Cases that once failed are
//! kept in `proptest-regressions/` and re-run first.

use std::collections::BTreeSet;
use std::time::Duration;

use firebreak_media::ingest::playlist::{self, Playlist};
use firebreak_media::ingest::{
    FeedItem, Intake, LiveStream, Sequencer, Source, StreamConfig, segment_channel,
};
use proptest::prelude::*;

const VALID: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-MAP:URI=\"init.mp4\"\n\
#EXTINF:2.0,\na.m4s\n#EXT-X-DISCONTINUITY\n#EXTINF:1.5,\nb.m4s\n#EXT-X-ENDLIST\n";

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn playlist_parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = playlist::parse(&String::from_utf8_lossy(&bytes));
    }

    /// Mutations of a valid playlist: any result is fine, but a parsed media playlist
    /// always has consecutive sequence numbers and non-negative durations.
    #[test]
    fn mutated_playlists_parse_consistently(cuts in proptest::collection::vec((0usize..VALID.len(), any::<char>()), 0..6)) {
        let mut text: Vec<char> = VALID.chars().collect();
        for (at, c) in cuts {
            let at = at.min(text.len().saturating_sub(1));
            if !text.is_empty() {
                text[at] = c;
            }
        }
        let text: String = text.into_iter().collect();
        if let Ok(Playlist::Media(m)) = playlist::parse(&text) {
            for (i, s) in m.segments.iter().enumerate() {
                prop_assert_eq!(s.sequence, m.media_sequence + i as u64);
                prop_assert!(s.duration >= 0.0 && s.duration.is_finite());
            }
            prop_assert!(m.target_duration > 0.0);
        }
    }

    /// Any arrival order with duplicates: what is released is strictly increasing,
    /// never twice, and everything received is either released, dropped as a
    /// duplicate/late, or still accounted for; finish() releases the rest.
    #[test]
    fn sequencer_releases_in_order_exactly_once(
        arrivals in proptest::collection::vec(0u64..60, 0..200),
        window in 1u64..8,
    ) {
        let mut s = Sequencer::new(window);
        let mut released = Vec::new();
        for &n in &arrivals {
            if let Intake::Released { segments, .. } = s.push(n, n) {
                released.extend(segments.into_iter().map(|(q, v)| { assert_eq!(q, v); q }));
            }
        }
        released.extend(s.finish().into_iter().map(|(q, _, _)| q));
        prop_assert!(released.windows(2).all(|w| w[0] < w[1]), "{released:?}");
        let distinct: BTreeSet<u64> = arrivals.iter().copied().collect();
        let st = s.stats();
        prop_assert_eq!(st.received as usize, arrivals.len());
        prop_assert_eq!(st.released as usize, released.len());
        prop_assert_eq!(st.received, st.released + st.duplicates + st.late);
        // Every released number was received; every distinct number was released, late,
        // or given up before it arrived.
        prop_assert!(released.iter().all(|r| distinct.contains(r)));
        let released_set: BTreeSet<u64> = released.iter().copied().collect();
        let never_released = distinct.difference(&released_set).count() as u64;
        prop_assert!(never_released <= st.missing, "unreleased numbers were given up as gaps");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random bytes (sometimes behind a valid MPEG-TS sync byte pattern) pushed as
    /// segments: the stream ends or fails with counters, never panics or hangs.
    #[test]
    fn random_segments_end_cleanly(segments in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40_000), 0..6), ts_like in any::<bool>()) {
        let (feed, reader) = segment_channel(16);
        let mut s = LiveStream::start(StreamConfig::new("fuzz"), Source::Segments(reader));
        for mut seg in segments {
            if ts_like {
                for chunk in seg.chunks_mut(188) {
                    chunk[0] = 0x47;
                }
            }
            feed.send(FeedItem::Bytes(seg)).unwrap();
        }
        drop(feed);
        prop_assert!(s.wait(Duration::from_secs(60)), "stream did not finish");
        let st = s.stats();
        prop_assert!(st.sampled <= st.decoded);
    }
}
