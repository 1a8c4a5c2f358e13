//! Evidence thumbnails: a small JPEG of each frame that raised or updated an
//! escalation, kept so a responder can see what the detectors saw.
//!
//! - The worker encodes it (at most [`EvidenceConfig::width`] pixels wide) when the
//!   decision is made, stores it here, and names it in the event's `thumbnail` field
//!   as `/v1/thumbnails/<decision id>`: a reference, never the bytes. In fleet mode it
//!   also publishes it to the evidence topic ([`encode_record`]), from which the
//!   coordinator keeps its own copy and serves it under the same path.
//! - Files live under `live/<tenant>/` and go after `retention_hours`. Evidence of a
//!   confirmed incident is moved to `preserved/<tenant>/` and kept `preserve_days`
//!   from the confirmation (default 180: six months, the EU terrorist-content
//!   regulation's figure for preserving removed content, Regulation (EU) 2021/784,
//!   Art. 6).
//! - Served only to authenticated callers of the image's tenant (and admins); the
//!   dashboards show them blurred until the responder clicks.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// `[evidence]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvidenceConfig {
    /// Keep thumbnails (default true).
    pub enabled: bool,
    /// Where (default `evidence/` in the data directory).
    pub dir: Option<PathBuf>,
    /// Largest width in pixels (16 to 640, default 160); the height keeps the aspect.
    pub width: u32,
    /// Thumbnails go this long after they were made (hours, default 168).
    pub retention_hours: f64,
    /// Evidence of confirmed incidents is kept this long from the confirmation
    /// (days, default 180).
    pub preserve_days: f64,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        EvidenceConfig {
            enabled: true,
            dir: None,
            width: 160,
            retention_hours: 168.0,
            preserve_days: 180.0,
        }
    }
}

impl EvidenceConfig {
    /// Every problem, with its path under `[evidence]`.
    pub fn validate(&self) -> Vec<firebreak_policy::Issue> {
        let mut out = Vec::new();
        if !(16..=640).contains(&self.width) {
            out.push(firebreak_policy::Issue::new(
                "evidence.width",
                "must be 16 to 640",
            ));
        }
        for (k, v) in [
            ("retention_hours", self.retention_hours),
            ("preserve_days", self.preserve_days),
        ] {
            if !(v.is_finite() && v > 0.0) {
                out.push(firebreak_policy::Issue::new(
                    format!("evidence.{k}"),
                    "must be a positive number",
                ));
            }
        }
        out
    }

    /// How long ordinary thumbnails are kept.
    pub fn retention(&self) -> Duration {
        Duration::from_secs_f64(self.retention_hours * 3600.0)
    }

    /// How long preserved ones are kept.
    pub fn preserve(&self) -> Duration {
        Duration::from_secs_f64(self.preserve_days * 86_400.0)
    }
}

/// The path a thumbnail is served at, and the event's `thumbnail` field.
pub fn reference(id: &str) -> String {
    format!("/v1/thumbnails/{id}")
}

/// Whether `id` is a decision id (32 lowercase hex digits): the only names stored or
/// looked up, so no request can reach another path.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A JPEG of an RGB24 frame (`width * 3` bytes per row), scaled down to at most
/// `max_width` pixels wide.
pub fn thumbnail(rgb: &[u8], width: u32, height: u32, max_width: u32) -> Result<Vec<u8>, String> {
    let img = image::RgbImage::from_raw(width, height, rgb.to_vec())
        .ok_or_else(|| format!("{} bytes are not a {width}x{height} RGB frame", rgb.len()))?;
    let (w, h) = if width > max_width {
        let h = (u64::from(height) * u64::from(max_width) / u64::from(width)).max(1) as u32;
        (max_width, h)
    } else {
        (width, height)
    };
    let small = if (w, h) == (width, height) {
        img
    } else {
        image::imageops::thumbnail(&img, w, h)
    };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 75)
        .encode_image(&small)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// What travels with a thumbnail on the evidence topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThumbnailMeta {
    /// Format version (1).
    pub v: u32,
    /// The decision id (also the record's key).
    pub id: String,
    /// The stream's tenant.
    pub tenant: String,
    /// The stream.
    pub stream: String,
    /// Media time of the frame, ms.
    pub media_ms: u64,
    /// Wall time of the decision, ms.
    pub wall_ms: u64,
}

/// The evidence topic's value: the metadata as one JSON line, then the JPEG bytes.
pub fn encode_record(meta: &ThumbnailMeta, jpeg: &[u8]) -> Vec<u8> {
    let mut out = serde_json::to_vec(meta).expect("serializable");
    out.push(b'\n');
    out.extend_from_slice(jpeg);
    out
}

/// Reads [`encode_record`]'s output.
pub fn decode_record(payload: &[u8]) -> Result<(ThumbnailMeta, &[u8]), String> {
    let nl = payload
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no metadata line")?;
    let meta: ThumbnailMeta =
        serde_json::from_slice(&payload[..nl]).map_err(|e| format!("metadata: {e}"))?;
    if meta.v != 1 {
        return Err(format!("version {} (this build reads 1)", meta.v));
    }
    if !valid_id(&meta.id) {
        return Err("id is not a decision id".into());
    }
    let jpeg = &payload[nl + 1..];
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return Err("not a JPEG".into());
    }
    Ok((meta, jpeg))
}

/// Thumbnails on disk (see the module doc). Blocking: call off the async runtime.
#[derive(Debug, Clone)]
pub struct EvidenceStore {
    dir: PathBuf,
}

const LIVE: &str = "live";
const PRESERVED: &str = "preserved";

/// A tenant's directory name: `t` and its bytes in hex (any tenant name is safe).
fn tenant_dir(tenant: &str) -> String {
    let mut s = String::with_capacity(1 + tenant.len() * 2);
    s.push('t');
    for b in tenant.bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn subdirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    match fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let e = e?;
                if e.file_type()?.is_dir() {
                    out.push(e.path());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}

impl EvidenceStore {
    /// A store in `dir` (created).
    pub fn open(dir: &Path) -> io::Result<EvidenceStore> {
        fs::create_dir_all(dir.join(LIVE))?;
        fs::create_dir_all(dir.join(PRESERVED))?;
        Ok(EvidenceStore {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, kind: &str, tenant: &str, id: &str) -> PathBuf {
        self.dir
            .join(kind)
            .join(tenant_dir(tenant))
            .join(format!("{id}.jpg"))
    }

    /// Stores thumbnail `id` of `tenant` (written whole, then renamed into place).
    pub fn put(&self, tenant: &str, id: &str, jpeg: &[u8]) -> io::Result<()> {
        if !valid_id(id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a decision id",
            ));
        }
        if self.path(PRESERVED, tenant, id).exists() {
            return Ok(());
        }
        let path = self.path(LIVE, tenant, id);
        let parent = path.parent().expect("has a parent");
        fs::create_dir_all(parent)?;
        let tmp = parent.join(format!(".{id}.tmp"));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(jpeg)?;
        drop(f);
        fs::rename(&tmp, &path)
    }

    /// Thumbnail `id`, if `tenant` (`None`: any tenant, for admins) has it.
    pub fn get(&self, tenant: Option<&str>, id: &str) -> io::Result<Option<Vec<u8>>> {
        if !valid_id(id) {
            return Ok(None);
        }
        let candidates: Vec<PathBuf> = match tenant {
            Some(t) => vec![self.path(PRESERVED, t, id), self.path(LIVE, t, id)],
            None => {
                let mut v = Vec::new();
                for kind in [PRESERVED, LIVE] {
                    for d in subdirs(&self.dir.join(kind))? {
                        v.push(d.join(format!("{id}.jpg")));
                    }
                }
                v
            }
        };
        for p in candidates {
            match fs::read(&p) {
                Ok(bytes) => return Ok(Some(bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Whether thumbnail `id` is preserved.
    pub fn is_preserved(&self, id: &str) -> io::Result<bool> {
        for d in subdirs(&self.dir.join(PRESERVED))? {
            if d.join(format!("{id}.jpg")).exists() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Moves thumbnail `id` (any tenant) to the preserved ones, its time set to `now`
    /// so it is kept for the preservation period from the confirmation. Returns
    /// whether it was found.
    pub fn preserve(&self, id: &str, now: SystemTime) -> io::Result<bool> {
        if !valid_id(id) {
            return Ok(false);
        }
        for d in subdirs(&self.dir.join(LIVE))? {
            let from = d.join(format!("{id}.jpg"));
            if !from.exists() {
                continue;
            }
            let tenant = d.file_name().expect("a directory name").to_owned();
            let to_dir = self.dir.join(PRESERVED).join(tenant);
            fs::create_dir_all(&to_dir)?;
            let to = to_dir.join(format!("{id}.jpg"));
            fs::rename(&from, &to)?;
            fs::OpenOptions::new()
                .write(true)
                .open(&to)?
                .set_modified(now)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Deletes thumbnails older than `retention` and preserved ones older than
    /// `preserve` (by file time) as of `now`. Returns how many went.
    pub fn sweep(
        &self,
        now: SystemTime,
        retention: Duration,
        preserve: Duration,
    ) -> io::Result<usize> {
        let mut removed = 0;
        for (kind, keep) in [(LIVE, retention), (PRESERVED, preserve)] {
            for d in subdirs(&self.dir.join(kind))? {
                for e in fs::read_dir(&d)? {
                    let e = e?;
                    let modified = e.metadata()?.modified()?;
                    let age = now.duration_since(modified).unwrap_or_default();
                    if age > keep {
                        match fs::remove_file(e.path()) {
                            Ok(()) => removed += 1,
                            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                            Err(err) => return Err(err),
                        }
                    }
                }
                // An emptied tenant directory goes too (a racing put recreates it).
                let _ = fs::remove_dir(&d);
            }
        }
        Ok(removed)
    }
}

/// The worker's side: makes, stores and (in fleet mode) publishes the thumbnail of
/// each frame that raised or updated an escalation. Blocking (encoding and a file
/// write, about a millisecond per decision): called on the stream's analysis thread.
pub struct Recorder {
    store: EvidenceStore,
    width: u32,
    publisher: Option<firebreak_delivery::telemetry::Publisher>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("store", &self.store)
            .field("width", &self.width)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Thumbnails at most `width` wide into `store`, and to `publisher`'s topic.
    pub fn new(
        store: EvidenceStore,
        width: u32,
        publisher: Option<firebreak_delivery::telemetry::Publisher>,
    ) -> Recorder {
        Recorder {
            store,
            width,
            publisher,
        }
    }

    /// The store.
    pub fn store(&self) -> &EvidenceStore {
        &self.store
    }

    /// The thumbnail of an RGB24 frame for decision `meta.id`: stored, published, and
    /// its reference returned; `None` (logged) if it could not be stored. A decision is
    /// never held back by its thumbnail.
    pub fn record(
        &self,
        meta: &ThumbnailMeta,
        rgb: &[u8],
        width: u32,
        height: u32,
    ) -> Option<String> {
        let jpeg = match thumbnail(rgb, width, height, self.width) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(decision = %meta.id, error = %e, "evidence thumbnail not made");
                return None;
            }
        };
        if let Err(e) = self.store.put(&meta.tenant, &meta.id, &jpeg) {
            tracing::warn!(decision = %meta.id, error = %e, "evidence thumbnail not stored");
            return None;
        }
        if let Some(p) = &self.publisher
            && let Err(e) = p.send(&meta.id, &encode_record(meta, &jpeg))
        {
            // Kept here; the coordinator shows the reference without the image.
            tracing::warn!(decision = %meta.id, error = %e, "evidence thumbnail not published");
        }
        Some(reference(&meta.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn bad_settings_are_named() {
        assert!(EvidenceConfig::default().validate().is_empty());
        let bad = EvidenceConfig {
            width: 8,
            retention_hours: 0.0,
            preserve_days: f64::NAN,
            ..EvidenceConfig::default()
        };
        let paths: Vec<String> = bad.validate().into_iter().map(|i| i.path).collect();
        assert_eq!(
            paths,
            [
                "evidence.width",
                "evidence.retention_hours",
                "evidence.preserve_days"
            ]
        );
        assert_eq!(
            EvidenceConfig::default().preserve(),
            Duration::from_secs(180 * 86_400)
        );
    }

    #[test]
    fn ids_are_32_lowercase_hex_digits_only() {
        assert!(valid_id(A));
        for bad in [
            "",
            "0123456789ABCDEF0123456789abcdef",
            "../../../../etc/passwd0000000000",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789abcdef/123456789abcdef",
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_thumbnail_is_a_jpeg_of_the_frame_scaled_to_the_width() {
        // 320x180: left half pure red, right half pure blue.
        let (w, h) = (320u32, 180u32);
        let mut rgb = Vec::with_capacity((w * h * 3) as usize);
        for _ in 0..h {
            for x in 0..w {
                rgb.extend_from_slice(if x < w / 2 {
                    &[255, 0, 0]
                } else {
                    &[0, 0, 255]
                });
            }
        }
        let jpeg = thumbnail(&rgb, w, h, 160).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "JPEG start-of-image marker");
        // Decoded by the image crate's independent JPEG decoder (zune-jpeg).
        let back = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
            .unwrap()
            .to_rgb8();
        assert_eq!(back.dimensions(), (160, 90));
        let red = back.get_pixel(40, 45).0;
        let blue = back.get_pixel(120, 45).0;
        assert!(red[0] > 230 && red[1] < 25 && red[2] < 25, "{red:?}");
        assert!(blue[2] > 230 && blue[0] < 25 && blue[1] < 25, "{blue:?}");
        // A frame already small enough keeps its size.
        let small = thumbnail(&rgb[..(64 * 36 * 3)], 64, 36, 160).unwrap();
        let back = image::load_from_memory(&small).unwrap();
        assert_eq!((back.width(), back.height()), (64, 36));
        // Bytes that are not the frame they claim to be are an error.
        assert!(thumbnail(&rgb[..10], w, h, 160).is_err());
    }

    #[test]
    fn a_record_round_trips_and_garbage_is_refused() {
        let meta = ThumbnailMeta {
            v: 1,
            id: A.into(),
            tenant: "acme".into(),
            stream: "cam-1".into(),
            media_ms: 12_000,
            wall_ms: 1_795_878_106_000,
        };
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3];
        let rec = encode_record(&meta, &jpeg);
        let (m, j) = decode_record(&rec).unwrap();
        assert_eq!(m, meta);
        assert_eq!(j, &jpeg);
        assert!(decode_record(b"no newline").is_err());
        assert!(decode_record(b"{}\n\xFF\xD8").is_err());
        let mut not_jpeg = encode_record(&meta, b"GIF89a");
        assert!(decode_record(&not_jpeg).is_err());
        not_jpeg = encode_record(
            &ThumbnailMeta {
                id: "../x".into(),
                ..meta.clone()
            },
            &jpeg,
        );
        assert!(decode_record(&not_jpeg).is_err());
    }

    #[test]
    fn tenants_see_only_their_thumbnails_and_admins_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = EvidenceStore::open(dir.path()).unwrap();
        store.put("acme", A, b"acme-image").unwrap();
        store.put("other", B, b"other-image").unwrap();
        assert_eq!(
            store.get(Some("acme"), A).unwrap().as_deref(),
            Some(&b"acme-image"[..])
        );
        assert_eq!(store.get(Some("acme"), B).unwrap(), None);
        assert_eq!(store.get(Some("other"), A).unwrap(), None);
        assert_eq!(
            store.get(None, B).unwrap().as_deref(),
            Some(&b"other-image"[..])
        );
        // A tenant name cannot climb out of the store.
        store.put("../../x", A, b"odd").unwrap();
        assert_eq!(
            store.get(Some("../../x"), A).unwrap().as_deref(),
            Some(&b"odd"[..])
        );
        assert!(!dir.path().join("x").exists());
        assert!(store.put("acme", "../escape", b"x").is_err());
        assert_eq!(store.get(None, "../escape").unwrap(), None);
    }

    #[test]
    fn retention_removes_old_thumbnails_and_preservation_keeps_confirmed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = EvidenceStore::open(dir.path()).unwrap();
        store.put("acme", A, b"a").unwrap();
        store.put("acme", B, b"b").unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_878_106);
        for id in [A, B] {
            fs::OpenOptions::new()
                .write(true)
                .open(store.path(LIVE, "acme", id))
                .unwrap()
                .set_modified(t0)
                .unwrap();
        }
        let (hour, day) = (Duration::from_secs(3600), Duration::from_secs(86_400));
        // A is confirmed 30 minutes in.
        assert!(store.preserve(A, t0 + hour / 2).unwrap());
        assert!(store.is_preserved(A).unwrap());
        assert!(!store.preserve(A, t0 + hour).unwrap(), "already moved");
        // Retention 1 hour, preservation 180 days.
        let (retention, preserve) = (hour, day * 180);
        assert_eq!(store.sweep(t0 + hour, retention, preserve).unwrap(), 0);
        assert_eq!(store.sweep(t0 + hour * 2, retention, preserve).unwrap(), 1);
        assert_eq!(store.get(Some("acme"), B).unwrap(), None);
        assert_eq!(
            store.get(Some("acme"), A).unwrap().as_deref(),
            Some(&b"a"[..])
        );
        // 180 days from the confirmation, not from the frame.
        let confirmed = t0 + hour / 2;
        assert_eq!(
            store
                .sweep(confirmed + preserve, retention, preserve)
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .sweep(
                    confirmed + preserve + Duration::from_secs(1),
                    retention,
                    preserve
                )
                .unwrap(),
            1
        );
        assert_eq!(store.get(None, A).unwrap(), None);
        // A copy arriving after the confirmation does not un-preserve it.
        store.put("acme", A, b"a").unwrap();
        store.preserve(A, confirmed).unwrap();
        store.put("acme", A, b"a2").unwrap();
        assert!(store.is_preserved(A).unwrap());
        assert_eq!(
            store.get(Some("acme"), A).unwrap().as_deref(),
            Some(&b"a"[..])
        );
    }
}
