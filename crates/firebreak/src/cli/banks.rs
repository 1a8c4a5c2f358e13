//! `firebreak lists ...` and `firebreak match ...`: banks on disk and matching queries
//! against them, printing JSON.
//!
//! Banks live in `<data dir>/banks/<name>.fbank` as binary snapshots
//! ([`firebreak_matching::bank`]); an import loads the bank, applies the list and writes the snapshot
//! atomically (temporary file, fsync, rename), so a crash mid-import leaves the previous
//! bank intact.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use firebreak_hashing::{Hash256, PdqHasher};
use firebreak_matching::bank::{Bank, ImportPolicy};
use firebreak_matching::lists::{self, ExportEntry, Format};
use firebreak_matching::mapfile::LoadMode;
use firebreak_matching::matcher::{EntryRef, MatchConfig, Matcher, PdqHit};
use firebreak_matching::store::{BankStore, LoadedBank, MatcherOptions, MatcherSource};
use firebreak_media::vpdq::{Conversion, VpdqOptions};
use serde_json::{Value, json};
use sha2::Digest;

/// `--data-dir`: where banks live.
#[derive(Debug, Args)]
pub struct DataDir {
    /// Where banks are stored.
    #[arg(
        long,
        env = "FIREBREAK_DATA",
        default_value = "firebreak-data",
        global = true
    )]
    pub data_dir: PathBuf,
}

/// `firebreak lists ...`.
#[derive(Debug, Subcommand)]
pub enum ListsCommand {
    /// Import a hash list into a bank (created if missing); prints an import report.
    Import(ImportArgs),
    /// Export a bank in a list format to standard output.
    Export(ExportArgs),
    /// Show every bank's size and load time.
    Stats,
    /// Bank a video: its vPDQ entry, every frame's PDQ hash (`ID/fN`) and views of
    /// each frame (`ID/fN@VIEW`: without bars, centre crops), skipping frames whose
    /// hash barely moved; prints a report.
    AddVideo(super::robust::AddVideoArgs),
}

/// `firebreak lists import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The list file.
    file: PathBuf,
    /// Its format: local-file, te-json, tcap, csv or vpdq.
    #[arg(long)]
    format: Format,
    /// The bank to import into.
    #[arg(long)]
    bank: String,
    /// Create the bank as a negative (benign, suppressing) bank.
    #[arg(long)]
    negative: bool,
    /// Reject PDQ hashes (and drop vPDQ frames) below this quality.
    #[arg(long, default_value_t = firebreak_hashing::vpdq::QUALITY_THRESHOLD)]
    min_quality: u8,
    /// Entry id for a vPDQ file (default: the file name without extension).
    #[arg(long)]
    id: Option<String>,
    /// Also publish what the import changed (new and changed entries, tombstones for
    /// deleted ones) to the fleet's bank topic: `BROKERS[/TOPIC]`, e.g.
    /// `kafka-1:9092,kafka-2:9092/firebreak.banks` (topic `firebreak.banks` if
    /// omitted). Acknowledged by the brokers (acks=all) before the command exits.
    #[arg(long, value_name = "BROKERS[/TOPIC]")]
    publish: Option<String>,
    /// A librdkafka property for `--publish` (`security.protocol=SASL_SSL`, ...);
    /// repeatable.
    #[arg(
        long = "kafka-property",
        value_name = "KEY=VALUE",
        requires = "publish"
    )]
    kafka_properties: Vec<String>,
}

/// Publishes the difference between two states of a bank to the bank topic.
fn publish(
    target: &str,
    properties: &[String],
    before: &Bank,
    after: &Bank,
) -> Result<(usize, usize)> {
    use crate::engine::feeds;
    let (brokers, topic) = match target.rsplit_once('/') {
        Some((b, t)) => (b, t),
        None => (target, "firebreak.banks"),
    };
    let mut settings = feeds::FeedSettings::new(brokers);
    settings.banks_topic = topic.to_owned();
    for p in properties {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--kafka-property {p:?}: expected KEY=VALUE"))?;
        settings.properties.insert(k.to_owned(), v.to_owned());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        firebreak_delivery::compacted::ensure_topic(
            &settings.shared(),
            topic,
            settings.partitions,
            settings.replication,
        )
        .await
        .with_context(|| format!("creating topic {topic}"))?;
        let writer = firebreak_delivery::compacted::Writer::new(&settings.shared(), topic)?;
        feeds::publish_bank_changes(&writer, before, after)
            .await
            .with_context(|| format!("publishing to {topic} at {brokers}"))
    })
}

/// `firebreak lists export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The bank.
    #[arg(long)]
    bank: String,
    /// The format.
    #[arg(long)]
    format: Format,
    /// Only entries carrying this label (an incident id: the entries its confirmation
    /// published).
    #[arg(long)]
    label: Option<String>,
}

/// `firebreak match ...`.
#[derive(Debug, Subcommand)]
pub enum MatchCommand {
    /// Match PDQ hashes (64 hex digits) or image files against every bank.
    Pdq(MatchPdqArgs),
    /// Match a video file (vPDQ, MD5 and SHA-256 of the file) against every bank.
    Vpdq(MatchVpdqArgs),
}

/// `firebreak match pdq`.
#[derive(Debug, Args)]
pub struct MatchPdqArgs {
    /// Match distance (inclusive).
    #[arg(long, default_value_t = firebreak_hashing::vpdq::DISTANCE_THRESHOLD)]
    distance: u32,
    /// Hashes or image paths.
    #[arg(required = true)]
    queries: Vec<String>,
    /// Print to standard error how long loading the banks took and the process's
    /// resident memory after loading (freed pages given back) and at its peak, as one
    /// JSON line.
    #[arg(long)]
    stats: bool,
    /// With `--stats`: time this many queries of pseudo-random hashes right after
    /// loading, and report their median and 99th percentile (how a just-started
    /// worker answers).
    #[arg(long, default_value_t = 0)]
    first_queries: usize,
}

/// `firebreak match vpdq`.
#[derive(Debug, Args)]
pub struct MatchVpdqArgs {
    /// Hash one frame every this many seconds.
    #[arg(long, short = 'r', default_value_t = 1.0)]
    seconds_per_hash: f32,
    /// The video file.
    video: PathBuf,
}

fn store(data: &Path) -> BankStore {
    BankStore::new(data.join("banks"))
}

/// Every bank in the data directory. A bank that cannot be read is reported (log and
/// stderr) and skipped, so one corrupt file does not take matching down.
fn load_all(data: &Path) -> Result<Vec<LoadedBank>> {
    let set = store(data).load_all()?;
    for e in &set.skipped {
        tracing::error!(error = %e, "skipping unreadable bank");
        eprintln!("error: skipping bank: {e}");
    }
    Ok(set.banks)
}

/// Runs a `lists` subcommand.
pub fn lists(data: &DataDir, cmd: &ListsCommand) -> Result<ExitCode> {
    match cmd {
        ListsCommand::Import(a) => import(&data.data_dir, a),
        ListsCommand::Export(a) => export(&data.data_dir, a),
        ListsCommand::Stats => stats(&data.data_dir),
        ListsCommand::AddVideo(a) => super::robust::add_video(&data.data_dir, a),
    }
}

fn import(data: &Path, args: &ImportArgs) -> Result<ExitCode> {
    BankStore::check_name(&args.bank)?;
    let mut raw = Vec::new();
    File::open(&args.file)
        .and_then(|mut f| f.read_to_end(&mut raw))
        .with_context(|| format!("{}", args.file.display()))?;
    let text = String::from_utf8(raw)
        .with_context(|| format!("{}: not UTF-8 text", args.file.display()))?;
    let store = store(data);
    let mut bank = if let Some(bank) = store.load(&args.bank)? {
        if bank.negative != args.negative {
            bail!(
                "bank {:?} is {}; pass {} to import into it",
                args.bank,
                if bank.negative {
                    "negative"
                } else {
                    "positive"
                },
                if bank.negative {
                    "--negative"
                } else {
                    "no --negative"
                }
            );
        }
        bank
    } else {
        Bank::new(&args.bank, args.negative)
    };
    let default_id = args.id.clone().or_else(|| {
        args.file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
    });
    let parsed = lists::parse(args.format, &text, default_id.as_deref());
    let before = args.publish.as_ref().map(|_| bank.clone());
    let report = bank.import(
        parsed.records,
        parsed.errors,
        ImportPolicy {
            min_quality: args.min_quality,
        },
    );
    for e in &report.errors {
        eprintln!("{}:{e}", args.file.display());
    }
    let changed = report.added + report.updated + report.deleted;
    if changed > 0 {
        store.save(&bank)?;
    }
    let published = match (&args.publish, &before) {
        (Some(target), Some(before)) => {
            let (records, tombstones) = publish(target, &args.kafka_properties, before, &bank)?;
            json!({"records": records, "tombstones": tombstones})
        }
        _ => Value::Null,
    };
    let rejected: BTreeMap<&str, usize> = report
        .rejected
        .iter()
        .map(|(r, n)| (r.name(), *n))
        .collect();
    let out = json!({
        "bank": bank.name,
        "negative": bank.negative,
        "file": args.file.display().to_string(),
        "format": args.format.name(),
        "added": report.added,
        "updated": report.updated,
        "deleted": report.deleted,
        "rejected": rejected,
        "rejected_total": report.rejected_total(),
        "entries": bank.len(),
        "published": published,
    });
    println!("{out}");
    Ok(if changed == 0 && report.rejected_total() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn export(data: &Path, args: &ExportArgs) -> Result<ExitCode> {
    let bank = store(data)
        .load(&args.bank)?
        .with_context(|| format!("no bank {:?}", args.bank))?;
    let entries = bank
        .entries()
        .iter()
        .filter(|e| args.label.as_ref().is_none_or(|l| e.labels.contains(l)))
        .map(|e| ExportEntry {
            id: &e.id,
            signal: &e.signal,
            labels: &e.labels,
        });
    let (text, skipped) = lists::export(args.format, entries);
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    if skipped > 0 {
        eprintln!(
            "{skipped} entries cannot be written as {}",
            args.format.name()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn stats(data: &Path) -> Result<ExitCode> {
    for LoadedBank {
        bank,
        bytes,
        load_ms,
    } in load_all(data)?
    {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for e in bank.entries() {
            *kinds.entry(e.signal.kind()).or_default() += 1;
        }
        let out = json!({
            "bank": bank.name,
            "negative": bank.negative,
            "entries": bank.len(),
            "by_kind": kinds,
            "snapshot_bytes": bytes,
            "load_ms": (load_ms * 100.0).round() / 100.0,
        });
        println!("{out}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Times `n` queries of pseudo-random hashes (a fixed sequence) against `matcher`: the
/// median and 99th percentile in microseconds, `null` when `n` is 0.
fn first_queries(matcher: &Matcher, n: usize) -> Value {
    if n == 0 {
        return Value::Null;
    }
    // SplitMix64 (Steele, Lea and Flood, 2014): a fixed, well-spread sequence.
    let mut state = 0x5EED_u64;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut micros: Vec<f64> = (0..n)
        .map(|_| {
            let hash = Hash256::from_limbs([next(), next(), next(), next()]);
            let t = std::time::Instant::now();
            std::hint::black_box(matcher.match_pdq(&hash));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    json!({"count": n, "p50_us": at(0.5), "p99_us": at(0.99), "max_us": at(1.0)})
}

fn entry_json(e: &EntryRef) -> Value {
    json!({"bank": &*e.bank, "entry_id": &*e.id, "labels": &*e.labels})
}

fn hits_json(hits: &[PdqHit]) -> Vec<Value> {
    hits.iter()
        .map(|h| {
            let mut v = entry_json(&h.entry);
            v["distance"] = json!(h.distance);
            v
        })
        .collect()
}

/// The matcher over the data directory's banks: from the matcher snapshot when it is
/// current, else built from the banks (and the snapshot written for next time, as the
/// daemon does). Returns where it came from, for `--stats`.
fn matcher(data: &Path, config: MatchConfig) -> Result<(Matcher, &'static str)> {
    let store = store(data);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let loaded = store.load_matcher(MatcherOptions {
        config,
        threads,
        snapshot: Some(LoadMode::Read),
        save: true,
    })?;
    for e in &loaded.skipped {
        tracing::error!(error = %e, "skipping unreadable bank");
        eprintln!("error: skipping bank: {e}");
    }
    if loaded.banks.is_empty() {
        bail!(
            "no banks in {} (import one with `firebreak lists import`)",
            store.dir().display()
        );
    }
    let source = match &loaded.source {
        MatcherSource::Snapshot => "snapshot",
        MatcherSource::Built { saved, .. } => {
            if let Some(Err(e)) = saved {
                eprintln!("warning: cannot write the matcher snapshot: {e}");
            }
            "built"
        }
    };
    Ok((loaded.matcher, source))
}

/// Runs a `match` subcommand.
pub fn matching(data: &DataDir, cmd: &MatchCommand) -> Result<ExitCode> {
    match cmd {
        MatchCommand::Pdq(a) => match_pdq(&data.data_dir, a),
        MatchCommand::Vpdq(a) => match_vpdq(&data.data_dir, a),
    }
}

fn match_pdq(data: &Path, args: &MatchPdqArgs) -> Result<ExitCode> {
    let config = MatchConfig {
        pdq_distance: args.distance,
        ..MatchConfig::default()
    };
    let started = std::time::Instant::now();
    let (matcher, source) = matcher(data, config)?;
    if args.stats {
        let load_seconds = started.elapsed().as_secs_f64();
        // The banks' parsed entries were freed once the matcher was built: give their
        // pages back, as the daemon does within `heap_trim_secs`, so that the resident
        // figure is what loading costs for good.
        if let Some(trim) = crate::daemon::HEAP_TRIM.get() {
            trim();
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        };
        let sizes = matcher.sizes();
        eprintln!(
            "{}",
            json!({
                "load_seconds": load_seconds,
                "source": source,
                "first_queries": first_queries(&matcher, args.first_queries),
                "pdq": sizes.pdq,
                "negative": sizes.negative,
                "video_frames": sizes.video_frames,
                "rss_bytes": kib("VmRSS:").map(|k| k * 1024),
                "peak_rss_bytes": kib("VmHWM:").map(|k| k * 1024),
            })
        );
    }
    let mut hasher = PdqHasher::new();
    let mut failed = 0;
    let mut out = BufWriter::new(std::io::stdout().lock());
    for q in &args.queries {
        let (hash, quality) = match Hash256::from_hex(q) {
            Ok(h) => (h, None),
            Err(_) => match firebreak_hashing::decode::decode_file(Path::new(q)) {
                Ok(img) => {
                    let h = hasher.hash(&img.view());
                    (h.hash, Some(h.quality))
                }
                Err(e) => {
                    eprintln!("error: {q}: not a PDQ hash, and {e}");
                    failed += 1;
                    continue;
                }
            },
        };
        let r = matcher.match_pdq(&hash);
        let line = json!({
            "query": q,
            "hash": hash.to_hex(),
            "quality": quality,
            "matches": hits_json(&r.matches),
            "suppressed": hits_json(&r.suppressed),
            "negative": hits_json(&r.negative),
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn file_digests(path: &Path) -> Result<([u8; 16], [u8; 32])> {
    let mut file = File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut md5 = md5::Md5::new();
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        sha.update(&buf[..n]);
    }
    Ok((md5.finalize().into(), sha.finalize().into()))
}

fn match_vpdq(data: &Path, args: &MatchVpdqArgs) -> Result<ExitCode> {
    let (matcher, _) = matcher(data, MatchConfig::default())?;
    let (md5, sha) = file_digests(&args.video)?;
    let opts = VpdqOptions {
        seconds_per_hash: args.seconds_per_hash,
        conversion: Conversion::Native,
        ..VpdqOptions::default()
    };
    let (features, _info) = firebreak_media::vpdq::hash_file(&args.video, &opts)?;
    let videos: Vec<Value> = matcher
        .match_video(&features)
        .iter()
        .map(|h| {
            let mut v = entry_json(&h.entry);
            v["query_match_percent"] = json!(h.query_match_percent);
            v["compared_match_percent"] = json!(h.compared_match_percent);
            v["is_match"] = json!(
                h.query_match_percent >= firebreak_hashing::vpdq::QUERY_MATCH_THRESHOLD_PERCENT
            );
            v
        })
        .collect();
    let digests: Vec<Value> = matcher
        .match_digests(Some(&md5), Some(&sha))
        .iter()
        .map(|h| {
            let mut v = entry_json(&h.entry);
            v["kind"] = json!(h.kind);
            v
        })
        .collect();
    let line = json!({
        "query": args.video.display().to_string(),
        "frames": features.len(),
        "md5": lists::hex(&md5),
        "sha256": lists::hex(&sha),
        "videos": videos,
        "digests": digests,
    });
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}
