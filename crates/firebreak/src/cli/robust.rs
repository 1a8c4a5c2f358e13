//! `firebreak lists add-video` (bank a video densely, with views) and `firebreak eval`
//! (the robustness harness: bank originals, stream every edited copy through the live
//! detect path with the built-in policy, report per family).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use firebreak_classify::ClassifierSet;
use firebreak_hashing::views::{Region, ViewSpec, hash_views};
use firebreak_hashing::vpdq::VpdqFeature;
use firebreak_hashing::{Hash256, PdqHash, PdqHasher};
use firebreak_matching::bank::{Bank, ImportPolicy};
use firebreak_matching::lists::{Record, Signal};
use firebreak_matching::matcher::{MatchConfig, Matcher};
use firebreak_matching::store::BankStore;
use firebreak_media::ingest::stream::{LiveStream, Sampling, Source, StreamConfig};
use firebreak_policy::config::PolicyConfig;
use firebreak_policy::policy::{DecisionKind, Policy};
use serde_json::json;

use crate::engine::detect::{Detectors, StreamDetect, match_views};
use crate::engine::views::{QueryViews, ViewSet, ViewsConfig};
use crate::metrics::Metrics;

/// Bank-side views `add-video` banks by default: the frame without bars, centre crops
/// (crops, captions, logos), corner crops of 85 % (off-centre crops) and the masked
/// corners of 50 % of the frame and of its centre 90 % (logos, also over cropped or
/// mirrored copies).
const DEFAULT_BANK_VIEWS: &str = "trimmed,centre90,centre80,centre60,tl85,tr85,bl85,br85,\
     notl50,notr50,nobl50,nobr50,centre90notl50,centre90notr50,centre90nobl50,centre90nobr50";

/// `firebreak lists add-video`.
#[derive(Debug, Args)]
pub struct AddVideoArgs {
    /// The video file.
    video: PathBuf,
    /// The bank to add to (created if missing).
    #[arg(long)]
    bank: String,
    /// Entry id (default: the file name without extension); frame entries are
    /// `ID/fN`, view entries `ID/fN@VIEW`.
    #[arg(long)]
    id: Option<String>,
    /// Views banked beside whole frames: `none` or a comma list of `trimmed`
    /// (without bars), `centreP` (centre P % of each dimension) and `tlP`, `trP`,
    /// `blP`, `brP` (P % of each dimension from a corner).
    #[arg(long, default_value = DEFAULT_BANK_VIEWS)]
    views: String,
    /// Bank every Nth frame (1: every frame).
    #[arg(long, default_value_t = 1)]
    every: u64,
    /// A frame's view is banked only when its hash moved more than this many bits
    /// from the view's last banked hash.
    #[arg(long, default_value_t = 8)]
    min_change: u32,
    /// Hashes below this quality are not banked.
    #[arg(long, default_value_t = firebreak_hashing::vpdq::QUALITY_THRESHOLD)]
    min_quality: u8,
}

/// Parses a bank-view list (`none` or `trimmed,centre90,...`).
pub fn parse_regions(text: &str) -> Result<Vec<Region>> {
    if text == "none" || text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|t| {
            Region::parse(t.trim())
                .filter(|r| *r != Region::Full)
                .with_context(|| {
                    format!(
                        "unknown view {t:?} (trimmed, centre10..centre99, \
                         tl10..tl99, tr.., bl.., br.., notl10..notl60, notr.., nobl.., \
                         nobr.., centreNNnotl10..)"
                    )
                })
        })
        .collect()
}

/// How a video is banked.
#[derive(Debug, Clone)]
pub struct Banking {
    /// Views beside the whole frame.
    pub regions: Vec<Region>,
    /// Every Nth frame.
    pub every: u64,
    /// Minimum change (bits) from the view's last banked hash.
    pub min_change: u32,
    /// Minimum quality.
    pub min_quality: u8,
}

/// The records banking `video` as `id`: its vPDQ entry (every visited frame) and the
/// frame and view entries.
pub fn video_records(video: &Path, id: &str, b: &Banking) -> Result<(Vec<Record>, f64)> {
    let spec = ViewSpec {
        trim_bars: b.regions.contains(&Region::Trimmed),
        centres: b
            .regions
            .iter()
            .filter_map(|r| match r {
                Region::Centre(p) => Some(*p),
                _ => None,
            })
            .collect(),
        corners: b
            .regions
            .iter()
            .filter_map(|r| match r {
                Region::Corner(c, p) => Some((*c, *p)),
                _ => None,
            })
            .collect(),
        dihedral: false,
        masks: b
            .regions
            .iter()
            .filter_map(|r| match r {
                Region::Masked {
                    base,
                    corner,
                    percent,
                } => Some((*base, *corner, *percent)),
                _ => None,
            })
            .collect(),
    };
    let mut hasher = PdqHasher::new();
    let mut features = Vec::new();
    let mut records = Vec::new();
    // A frame with bars of its own also banks centre and corner views of the whole
    // frame (`@centreP+bars`, `@tlP+bars`): a copy whose bars are hidden on one side (a
    // logo, a caption over them, an off-centre crop) is not trimmed, so its view
    // includes them.
    let untrimmed = ViewSpec {
        trim_bars: false,
        ..spec.clone()
    };
    let mut last: BTreeMap<(Region, bool), Hash256> = BTreeMap::new();
    let info = firebreak_media::frames::for_each_frame(video, b.every, (1280, 720), |f| {
        let mut views: Vec<(_, bool)> = hash_views(&mut hasher, &f.image, &spec)
            .into_iter()
            .map(|v| (v, false))
            .collect();
        if spec.trim_bars && views.iter().any(|(v, _)| v.region == Region::Trimmed) {
            views.extend(
                hash_views(&mut hasher, &f.image, &untrimmed)
                    .into_iter()
                    .filter(|v| {
                        matches!(
                            v.region,
                            Region::Centre(_) | Region::Corner(..) | Region::Masked { .. }
                        )
                    })
                    .map(|v| (v, true)),
            );
        }
        let (views, bars): (Vec<_>, Vec<bool>) = views.into_iter().unzip();
        features.push(VpdqFeature {
            pdq: PdqHash {
                hash: views[0].hash,
                quality: views[0].quality,
            },
            frame_number: f.number,
            timestamp: f.seconds,
        });
        for (v, &bars) in views.iter().zip(&bars) {
            if v.quality < b.min_quality {
                continue;
            }
            if last
                .get(&(v.region, bars))
                .is_some_and(|h| h.distance(&v.hash) <= b.min_change)
            {
                continue;
            }
            last.insert((v.region, bars), v.hash);
            let entry = match (v.region, bars) {
                (Region::Full, _) => format!("{id}/f{}", f.number),
                (r, false) => format!("{id}/f{}@{}", f.number, r.name()),
                (r, true) => format!("{id}/f{}@{}+bars", f.number, r.name()),
            };
            records.push(Record {
                line: records.len() + 2,
                id: Some(entry),
                signal: Signal::Pdq {
                    hash: v.hash,
                    quality: Some(v.quality),
                },
                labels: Vec::new(),
                delete: false,
            });
        }
        true
    })
    .with_context(|| video.display().to_string())?;
    records.insert(
        0,
        Record {
            line: 1,
            id: Some(id.to_owned()),
            signal: Signal::Vpdq(features),
            labels: Vec::new(),
            delete: false,
        },
    );
    Ok((records, info.frames as f64 / info.fps.max(1e-9)))
}

/// Runs `lists add-video`.
pub fn add_video(data: &Path, args: &AddVideoArgs) -> Result<ExitCode> {
    BankStore::check_name(&args.bank)?;
    let regions = parse_regions(&args.views)?;
    let id = args.id.clone().unwrap_or_else(|| {
        args.video
            .file_stem()
            .map_or_else(|| "video".into(), |s| s.to_string_lossy().into_owned())
    });
    let (records, seconds) = video_records(
        &args.video,
        &id,
        &Banking {
            regions,
            every: args.every,
            min_change: args.min_change,
            min_quality: args.min_quality,
        },
    )?;
    let store = BankStore::new(data.join("banks"));
    let mut bank = match store.load(&args.bank)? {
        Some(b) if b.negative => bail!("bank {:?} is negative", args.bank),
        Some(b) => b,
        None => Bank::new(&args.bank, false),
    };
    // Entries of an earlier banking of the same id go first.
    let prefix = format!("{id}/");
    let stale: Vec<String> = bank
        .entries()
        .iter()
        .filter(|e| e.id == id || e.id.starts_with(&prefix))
        .map(|e| e.id.clone())
        .collect();
    for e in &stale {
        bank.remove(e);
    }
    let n = records.len();
    let report = bank.import(
        records,
        Vec::new(),
        ImportPolicy {
            min_quality: args.min_quality,
        },
    );
    store.save(&bank)?;
    println!(
        "{}",
        json!({
            "bank": bank.name,
            "id": id,
            "video_seconds": seconds,
            "entries_added": report.added + report.updated,
            "entries_replaced": stale.len(),
            "records": n,
            "entries_per_minute": (report.added + report.updated) as f64 * 60.0 / seconds.max(1e-9),
            "entries": bank.len(),
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// Where `eval`'s bank comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BankSource {
    /// `lists add-video`: every frame, with views (the pixels are at hand).
    AddVideo,
    /// A shared hash list: vPDQ at one hash per second plus those frames' PDQ hashes.
    HashList,
    /// Confirmed from live: the PDQ hashes of the original's frames as the live
    /// monitor sampled them (2 per second).
    Confirmed,
}

/// `firebreak eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The set (`scripts/robustness/gen.sh`): originals/, copies/ (`ORIG__FAMILY.mp4`),
    /// negatives/, optionally negframes/.
    #[arg(long)]
    set: PathBuf,
    /// Where the bank comes from.
    #[arg(long, value_enum, default_value_t = BankSource::AddVideo)]
    source: BankSource,
    /// add-video only: views banked beside whole frames (`none` or a list).
    #[arg(long, default_value = DEFAULT_BANK_VIEWS)]
    bank_views: String,
    /// add-video only: bank every Nth frame.
    #[arg(long, default_value_t = 1)]
    every: u64,
    /// Query views: `none`, or a comma list of `dihedral`, `bars`, `centreP`, `maskP`
    /// (the four corners of P % masked, 10 to 60).
    #[arg(long, default_value = "dihedral,bars,centre60,mask50")]
    query_views: String,
    /// Also hash every frame of negatives/ and negframes/ with the query views and
    /// count frames that match (the false-match rate over many frames).
    #[arg(long)]
    frames: bool,
    /// Sampled frames per second (the daemon's default is 2).
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
}

fn parse_query(text: &str) -> Result<ViewSet> {
    let mut set = ViewSet::plain();
    if text == "none" || text.is_empty() {
        return Ok(set);
    }
    for t in text.split(',') {
        match t.trim() {
            "dihedral" => set.dihedral = true,
            "bars" => set.trim_bars = true,
            other => match (
                Region::parse(other),
                other
                    .strip_prefix("mask")
                    .and_then(|p| p.parse::<u8>().ok()),
            ) {
                (Some(Region::Centre(p)), _) => set.centres.push(p),
                (_, Some(p)) if (10..=firebreak_hashing::views::MAX_MASK).contains(&p) => {
                    set.masked.push(p)
                }
                _ => bail!("unknown query view {other:?} (dihedral, bars, centreP, maskP)"),
            },
        }
    }
    Ok(set)
}

fn videos(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "mp4"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The sampled frames of `video` as live ingest produces them.
fn sampled(video: &Path, rate: f64) -> Vec<firebreak_media::ingest::SampledFrame> {
    let mut config = StreamConfig::new(stem(video));
    config.sampling = Sampling::PerSecond(rate);
    config.queue_capacity = 100_000;
    config.degrade_after = u64::MAX;
    let mut stream = LiveStream::start(config, Source::File(video.to_path_buf()));
    let queue = stream.frames().clone();
    let mut out = Vec::new();
    loop {
        match queue.pop(Duration::from_millis(200)) {
            Some(f) => out.push(f),
            None if stream.is_finished() && queue.is_empty() => break,
            None => {}
        }
    }
    stream.wait(Duration::from_secs(5));
    out
}

/// The bank for `source`, and the banked media seconds.
fn build_bank(args: &EvalArgs, originals: &[PathBuf]) -> Result<(Bank, f64)> {
    let mut bank = Bank::new("crisis", false);
    let mut seconds = 0.0;
    for o in originals {
        let id = stem(o);
        let records = match args.source {
            BankSource::AddVideo => {
                let (r, s) = video_records(
                    o,
                    &id,
                    &Banking {
                        regions: parse_regions(&args.bank_views)?,
                        every: args.every,
                        min_change: 8,
                        min_quality: 50,
                    },
                )?;
                seconds += s;
                r
            }
            BankSource::HashList => {
                let (features, info) = firebreak_media::vpdq::hash_file(
                    o,
                    &firebreak_media::vpdq::VpdqOptions {
                        seconds_per_hash: 1.0,
                        ..Default::default()
                    },
                )?;
                seconds += info.frames_decoded as f64 / info.fps;
                let mut r: Vec<Record> = features
                    .iter()
                    .filter(|f| f.pdq.quality >= 50)
                    .map(|f| Record {
                        line: 0,
                        id: Some(format!("{id}/s{}", f.frame_number)),
                        signal: Signal::Pdq {
                            hash: f.pdq.hash,
                            quality: Some(f.pdq.quality),
                        },
                        labels: Vec::new(),
                        delete: false,
                    })
                    .collect();
                r.push(Record {
                    line: 0,
                    id: Some(id.clone()),
                    signal: Signal::Vpdq(features),
                    labels: Vec::new(),
                    delete: false,
                });
                r
            }
            BankSource::Confirmed => {
                let mut hasher = PdqHasher::new();
                let frames = sampled(o, args.rate);
                seconds += frames.last().map_or(0.0, |f| f.pts + 1.0 / args.rate);
                frames
                    .iter()
                    .filter_map(|f| {
                        let img = f.image().ok()?;
                        let h = hasher.hash(&img);
                        (h.quality >= 50).then(|| Record {
                            line: 0,
                            id: Some(format!("{id}/c{}", f.index)),
                            signal: Signal::Pdq {
                                hash: h.hash,
                                quality: Some(h.quality),
                            },
                            labels: Vec::new(),
                            delete: false,
                        })
                    })
                    .collect()
            }
        };
        bank.import(records, Vec::new(), ImportPolicy::default());
    }
    Ok((bank, seconds))
}

/// One copy's outcome.
#[derive(Debug, Default, Clone)]
struct Outcome {
    /// Media time of the first escalation naming the right original.
    detected_at: Option<f64>,
    /// Escalations naming another original.
    wrong: usize,
    /// The first matching evidence's view.
    view: Option<String>,
}

/// Streams `frames` through a fresh stream's detect path and policy; `None` original
/// counts every escalation as wrong (a negative).
fn run_copy(
    detectors: &Detectors,
    policy: &Arc<Policy>,
    metrics: &Metrics,
    frames: &[firebreak_media::ingest::SampledFrame],
    original: Option<&str>,
    cost: &mut (Duration, u64),
) -> Outcome {
    let mut s = StreamDetect::new(
        "eval",
        policy,
        10.0,
        firebreak_matching::window::DEFAULT_MAX_FRAMES,
    );
    let mut out = Outcome::default();
    for f in frames {
        let t = Instant::now();
        let Some(signals) = s.signals(detectors, f, "eval", 1, metrics) else {
            continue;
        };
        cost.0 += t.elapsed();
        cost.1 += 1;
        let decisions = s.state.on_frame(policy, &signals);
        for d in decisions {
            if d.kind != DecisionKind::Escalated && d.kind != DecisionKind::Updated {
                continue;
            }
            let ids: Vec<(String, Option<String>)> = d
                .evidence
                .iter()
                .filter_map(|e| match e {
                    firebreak_policy::policy::Evidence::HashMatch { matched, .. } => {
                        Some((matched.entry_id.clone(), matched.view.clone()))
                    }
                    firebreak_policy::policy::Evidence::VideoMatch { matched, .. } => {
                        Some((matched.entry_id.clone(), Some("vpdq-window".into())))
                    }
                    _ => None,
                })
                .collect();
            for (entry, view) in ids {
                let owner = entry.split(['/', '@']).next().unwrap_or_default();
                if Some(owner) == original {
                    if out.detected_at.is_none() {
                        out.detected_at = Some(f.pts);
                        out.view = view.or(Some("full".into()));
                    }
                } else {
                    out.wrong += 1;
                }
            }
        }
    }
    out
}

/// One family's tally: (copies, detected, media seconds to detect, escalations naming
/// another original, matched views).
type Family = (usize, usize, Vec<f64>, usize, Vec<String>);

/// Runs `eval`: prints one JSON line per family, then a summary line.
pub fn eval(args: &EvalArgs) -> Result<ExitCode> {
    let query = parse_query(&args.query_views)?;
    let originals = videos(&args.set.join("originals"));
    if originals.is_empty() {
        bail!("no originals in {}", args.set.join("originals").display());
    }
    let t = Instant::now();
    let (bank, seconds) = build_bank(args, &originals)?;
    let bank_secs = t.elapsed().as_secs_f64();
    let detectors = Detectors {
        matcher: Matcher::new([&bank], MatchConfig::default(), 2),
        classifiers: ClassifierSet::new(Vec::new()),
        frame_models: Vec::new(),
        banks: vec![(bank.name.clone(), bank.len(), false)],
        views: QueryViews::new(ViewsConfig::uniform(query.clone())),
    };
    let policy = Arc::new(Policy::new(PolicyConfig::builtin()));
    let (metrics, _) = Metrics::new();
    let mut cost = (Duration::ZERO, 0u64);

    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut misses: Vec<String> = Vec::new();
    for copy in videos(&args.set.join("copies")) {
        let name = stem(&copy);
        let Some((orig, family)) = name.split_once("__") else {
            continue;
        };
        let frames = sampled(&copy, args.rate);
        let o = run_copy(
            &detectors,
            &policy,
            &metrics,
            &frames,
            Some(orig),
            &mut cost,
        );
        let e = families.entry(family.to_owned()).or_default();
        e.0 += 1;
        if let Some(at) = o.detected_at {
            eprintln!(
                "{name}: detected at {at:.2} s of media ({})",
                o.view.as_deref().unwrap_or("full")
            );
            e.1 += 1;
            e.2.push(at);
        } else {
            misses.push(name.clone());
        }
        e.3 += o.wrong;
        if let Some(v) = o.view {
            e.4.push(v);
        }
    }
    let mut detected_families = 0;
    for (family, (n, k, at, wrong, views)) in &families {
        let mut views = views.clone();
        views.sort();
        views.dedup();
        if *k * 6 >= *n * 5 {
            detected_families += 1;
        }
        println!(
            "{}",
            json!({
                "family": family, "originals": n, "detected": k,
                "max_media_secs_to_detect": at.iter().copied().fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x)))),
                "wrong_original": wrong, "views": views,
            })
        );
    }
    let mut negative_escalations = 0;
    let mut negative_frames = 0u64;
    for neg in videos(&args.set.join("negatives")) {
        let frames = sampled(&neg, args.rate);
        negative_frames += frames.len() as u64;
        let o = run_copy(&detectors, &policy, &metrics, &frames, None, &mut cost);
        if o.wrong > 0 {
            eprintln!("false match: {}", neg.display());
        }
        negative_escalations += o.wrong;
    }
    let (mut frames_checked, mut frames_matched) = (0u64, 0u64);
    if args.frames {
        let mut hasher = PdqHasher::new();
        let spec = &detectors.views.spec;
        for dir in ["negatives", "negframes"] {
            for v in videos(&args.set.join(dir)) {
                firebreak_media::frames::for_each_frame(&v, 1, (1280, 720), |f| {
                    let views = hash_views(&mut hasher, &f.image, spec);
                    frames_checked += 1;
                    if !match_views(&detectors.matcher, &detectors.views, &views, None).is_empty() {
                        frames_matched += 1;
                        eprintln!("false frame match: {} frame {}", v.display(), f.number);
                    }
                    true
                })
                .with_context(|| v.display().to_string())?;
            }
        }
    }
    println!(
        "{}",
        json!({
            "summary": true,
            "source": format!("{:?}", args.source),
            "bank_views": if args.source == BankSource::AddVideo { args.bank_views.clone() } else { "none".into() },
            "query_views": args.query_views,
            "families": families.len(),
            "families_detected_5_of_6": detected_families,
            "misses": misses,
            "bank_entries": bank.len(),
            "banked_seconds": seconds,
            "entries_per_minute": bank.len() as f64 * 60.0 / seconds.max(1e-9),
            "bank_build_secs": bank_secs,
            "negative_streams_escalations": negative_escalations,
            "negative_stream_frames": negative_frames,
            "negative_frames_checked": frames_checked,
            "negative_frames_matched": frames_matched,
            "detect_us_per_frame": cost.0.as_secs_f64() * 1e6 / cost.1.max(1) as f64,
        })
    );
    Ok(ExitCode::SUCCESS)
}
