//! Segments larger than the topic's message limit travel as several records (chunks)
//! and are reassembled by the owner. Pure: no I/O, no clock.

use std::collections::HashMap;

/// `bytes` cut into pieces of at most `max` bytes (at least one piece, so an empty
/// segment is one empty chunk; `max` 0 counts as 1).
pub fn split(bytes: &[u8], max: usize) -> Vec<&[u8]> {
    if bytes.is_empty() {
        return vec![bytes];
    }
    bytes.chunks(max.max(1)).collect()
}

/// `"i/n"`, the chunk header's value.
pub fn header(index: usize, count: usize) -> String {
    format!("{index}/{count}")
}

/// Parses `"i/n"` (0 <= i < n, n >= 1).
pub fn parse_header(value: &str) -> Option<(usize, usize)> {
    let (i, n) = value.split_once('/')?;
    let (i, n) = (i.parse().ok()?, n.parse().ok()?);
    (n >= 1 && i < n && n <= 1 << 16).then_some((i, n))
}

#[derive(Debug)]
struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    first_offset: i64,
}

/// Chunks of segments of one partition, by (stream, sequence number), until complete.
#[derive(Debug, Default)]
pub struct Reassembler {
    partial: HashMap<(String, u64), Partial>,
}

impl Reassembler {
    /// Nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers chunk `index` of `count` of segment `seq` of `stream`, read at `offset`;
    /// returns the whole segment once every chunk arrived. A chunk seen twice (a
    /// retried push) replaces the first copy.
    pub fn offer(
        &mut self,
        stream: &str,
        seq: u64,
        (index, count): (usize, usize),
        offset: i64,
        bytes: &[u8],
    ) -> Option<Vec<u8>> {
        if count == 1 {
            return Some(bytes.to_vec());
        }
        let key = (stream.to_owned(), seq);
        let p = self.partial.entry(key.clone()).or_insert_with(|| Partial {
            parts: vec![None; count],
            first_offset: offset,
        });
        if p.parts.len() != count || index >= count {
            // A different chunking of the same segment (another push of it): restart.
            *p = Partial {
                parts: vec![None; count],
                first_offset: offset,
            };
        }
        p.parts[index] = Some(bytes.to_vec());
        if p.parts.iter().all(Option::is_some) {
            let p = self.partial.remove(&key)?;
            Some(p.parts.into_iter().flatten().flatten().collect())
        } else {
            None
        }
    }

    /// The offset of the oldest chunk of a segment still incomplete (a checkpoint must
    /// not pass it, or the segment's first chunks would be skipped on resume).
    pub fn oldest_pending(&self) -> Option<i64> {
        self.partial.values().map(|p| p.first_offset).min()
    }

    /// Forgets everything (the partition moved away).
    pub fn clear(&mut self) {
        self.partial.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_segment_comes_back_whole_in_any_order() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let parts = split(&bytes, 300);
        assert_eq!(parts.len(), 4, "300+300+300+100");
        let mut r = Reassembler::new();
        let order = [2, 0, 3, 1];
        let mut out = None;
        for (k, &i) in order.iter().enumerate() {
            out = r.offer("s", 7, (i, 4), 10 + k as i64, parts[i]);
            if k < 3 {
                assert!(out.is_none());
                assert_eq!(r.oldest_pending(), Some(10));
            }
        }
        assert_eq!(out.unwrap(), bytes);
        assert_eq!(r.oldest_pending(), None);
    }

    #[test]
    fn headers_round_trip_and_bad_ones_are_refused() {
        assert_eq!(parse_header(&header(2, 5)), Some((2, 5)));
        for bad in ["", "1", "5/5", "a/2", "0/0", "-1/2"] {
            assert_eq!(parse_header(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_small_segment_is_one_chunk() {
        assert_eq!(split(b"abc", 10), vec![&b"abc"[..]]);
        let mut r = Reassembler::new();
        assert_eq!(r.offer("s", 0, (0, 1), 3, b"abc").unwrap(), b"abc");
    }
}
