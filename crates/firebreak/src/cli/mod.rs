//! Command-line interface:
//! `firebreak hash|compare|classify|models|lists|match|run|config|openapi|replay|labels|signals`.
//!
//! - [`banks`]: `lists` and `match`, over the banks on disk.
//! - [`replay`]: `replay`, `labels` and `signals`, over the signal log.

pub mod banks;
pub mod replay;
pub mod robust;

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use firebreak_hashing::PdqHasher;
use firebreak_hashing::decode::decode_file;
use firebreak_hashing::vpdq;
use firebreak_media::vpdq::{Conversion, VpdqOptions};

#[derive(Debug, Parser)]
#[command(name = "firebreak", version, about = "Live-stream crisis monitor")]
struct Cli {
    #[command(flatten)]
    data: banks::DataDir,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compute perceptual hashes.
    #[command(subcommand)]
    Hash(HashCommand),
    /// Compare hashes.
    #[command(subcommand)]
    Compare(CompareCommand),
    /// Manage hash-list banks (import, export, stats).
    #[command(subcommand)]
    Lists(banks::ListsCommand),
    /// Match hashes, images or videos against the banks; prints JSON lines.
    #[command(subcommand)]
    Match(banks::MatchCommand),
    /// Run the monitor: ingest, detectors, policy, delivery, HTTP API and dashboard.
    Run(RunArgs),
    /// Run the fleet's crisis coordinator: cross-stream incidents from the workers'
    /// escalations and signals, responder actions, confirmations published to every
    /// worker (needs `[fleet]`).
    Coordinator(CoordinatorArgs),
    /// Check a daemon config file (every problem, with its path).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Classify images with an ONNX model directory (model.toml); prints JSON lines.
    Classify(ClassifyArgs),
    /// Check model directories: manifest, file, sha256, and the model's real input and
    /// output against the manifest.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Print the HTTP API's OpenAPI document (JSON), generated from the handlers: the
    /// content of crates/firebreak/openapi.json.
    Openapi,
    /// The audit log (`audit.jsonl` in the data directory).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The robustness harness: bank a set's originals, stream every edited copy
    /// through the live detect path with the built-in policy, report per family
    /// (JSON lines). Make a set with scripts/robustness/gen.sh.
    Eval(robust::EvalArgs),
    /// Replay a policy over recorded signals: escalations, precision and recall against
    /// labels, time to detect; sweeps and an HTML report.
    Replay(Box<replay::ReplayArgs>),
    /// Labels of recorded streams (true crisis / benign ranges).
    #[command(subcommand)]
    Labels(replay::LabelsCommand),
    /// The signal log.
    #[command(subcommand)]
    Signals(replay::SignalsCommand),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the audit log's hash chain: prints the head (compare it with the published
    /// `firebreak_audit_head`) or the first line that breaks the chain (exit 1).
    Verify {
        /// The log file (default: `audit.jsonl` in the data directory).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The config file (TOML); without it, the embedded defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CoordinatorArgs {
    /// The config file (TOML) with a `[fleet]` section; `[coordinator]` is optional.
    #[arg(long, short)]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate FILE.
    Check { file: PathBuf },
}

#[derive(Debug, Args)]
struct ClassifyArgs {
    /// The model directory (with model.toml).
    model: PathBuf,
    /// Image files (PNG, JPEG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Load each model directory and report whether it is usable.
    Check {
        /// Model directories.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum HashCommand {
    /// PDQ-hash image files: prints `hash_hex,quality,path` per file.
    Pdq(PdqArgs),
    /// vPDQ-hash a video: prints `frameNumber,quality,pdqHashHex,timestampSeconds` lines.
    Vpdq(VpdqArgs),
}

#[derive(Debug, Args)]
struct PdqArgs {
    /// Print the eight dihedral hashes (original, rot90, rot180, rot270, flipx, flipy,
    /// flipplus1, flipminus1), then quality and path.
    #[arg(long)]
    dihedral: bool,
    /// Image files (PNG, JPEG).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct VpdqArgs {
    /// Hash one frame every this many seconds (0: every frame).
    #[arg(long, short = 'r', default_value_t = 0.0, value_parser = non_negative)]
    seconds_per_hash: f32,
    /// Scale frames to NxN before hashing (the reference's `-s`).
    #[arg(long, short = 's')]
    downsample: Option<u32>,
    /// Pixel conversion: `reference` (libswscale's C path, identical to the reference
    /// data on every CPU) or `native` (this CPU's SIMD path, a few bits different).
    #[arg(long, value_enum, default_value_t = ConversionArg::Reference)]
    conversion: ConversionArg,
    /// Decoder threads (0: FFmpeg chooses).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// The video file.
    video: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ConversionArg {
    Reference,
    Native,
}

#[derive(Debug, Subcommand)]
enum CompareCommand {
    /// Compare two vPDQ hash files as python-threatexchange does.
    Vpdq(CompareVpdqArgs),
}

#[derive(Debug, Args)]
struct CompareVpdqArgs {
    /// Query video's vPDQ text.
    query: PathBuf,
    /// Compared video's vPDQ text.
    compared: PathBuf,
    /// Ignore frames below this quality.
    #[arg(long, default_value_t = vpdq::QUALITY_THRESHOLD)]
    quality: u8,
    /// Frames match at this Hamming distance or less.
    #[arg(long, default_value_t = vpdq::DISTANCE_THRESHOLD)]
    distance: u32,
}

fn non_negative(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a non-negative number of seconds")),
    }
}

/// Parses the arguments and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Hash(HashCommand::Pdq(a)) => hash_pdq(&a),
        Command::Hash(HashCommand::Vpdq(a)) => hash_vpdq(&a).map(|()| ExitCode::SUCCESS),
        Command::Compare(CompareCommand::Vpdq(a)) => compare_vpdq(&a),
        Command::Lists(c) => banks::lists(&cli.data, &c),
        Command::Match(c) => banks::matching(&cli.data, &c),
        Command::Run(a) => crate::daemon::run(a.config.as_deref()),
        Command::Coordinator(a) => crate::coordinator::run(&a.config),
        Command::Config(ConfigCommand::Check { file }) => Ok(crate::daemon::check(&file)),
        Command::Classify(a) => classify(&a),
        Command::Models(ModelsCommand::Check { dirs }) => models_check(&dirs),
        Command::Openapi => print_openapi(),
        Command::Eval(a) => robust::eval(&a),
        Command::Replay(a) => replay::run_replay(&cli.data, &a),
        Command::Labels(c) => replay::run_labels(&cli.data, &c),
        Command::Signals(c) => replay::run_signals(&cli.data, &c),
        Command::Audit(AuditCommand::Verify { file }) => {
            audit_verify(&file.unwrap_or_else(|| cli.data.data_dir.join("audit.jsonl")))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn audit_verify(path: &std::path::Path) -> Result<ExitCode> {
    use crate::engine::audit::{Verdict, verify};
    match verify(path).with_context(|| format!("{}", path.display()))? {
        Verdict::Intact {
            lines,
            unchained,
            head,
        } => {
            println!("ok: {lines} lines ({unchained} before the chain), head {head}");
            Ok(ExitCode::SUCCESS)
        }
        Verdict::Broken { line, reason } => {
            println!("broken at line {line}: {reason}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Files above this count get a progress bar (on a terminal).
const PROGRESS_MIN_FILES: usize = 20;

fn hash_pdq(args: &PdqArgs) -> Result<ExitCode> {
    let bar = if args.files.len() >= PROGRESS_MIN_FILES {
        indicatif::ProgressBar::new(args.files.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut hasher = PdqHasher::new();
    let mut failed = 0usize;
    for path in &args.files {
        bar.inc(1);
        let img = match decode_file(path) {
            Ok(img) => img,
            Err(e) => {
                bar.suspend(|| eprintln!("error: {e}"));
                failed += 1;
                continue;
            }
        };
        if args.dihedral {
            let d = hasher.dihedral(&img.view());
            for h in &d.hashes {
                write!(out, "{h},")?;
            }
            writeln!(out, "{},{}", d.quality, path.display())?;
        } else {
            let h = hasher.hash(&img.view());
            writeln!(out, "{},{},{}", h.hash, h.quality, path.display())?;
        }
    }
    bar.finish_and_clear();
    out.flush()?;
    if failed > 0 {
        eprintln!("{failed} of {} files could not be hashed", args.files.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn hash_vpdq(args: &VpdqArgs) -> Result<()> {
    let opts = VpdqOptions {
        seconds_per_hash: args.seconds_per_hash,
        downsample: args.downsample,
        threads: args.threads,
        conversion: match args.conversion {
            ConversionArg::Reference => Conversion::Reference,
            ConversionArg::Native => Conversion::Native,
        },
    };
    let (features, info) = firebreak_media::vpdq::hash_file(&args.video, &opts)?;
    tracing::info!(
        fps = info.fps,
        frames = info.frames_decoded,
        hashed = features.len(),
        decode_errors = info.decode_errors,
        "hashed video"
    );
    let mut out = BufWriter::new(std::io::stdout().lock());
    out.write_all(vpdq::to_text(&features).as_bytes())?;
    out.flush()?;
    Ok(())
}

fn read_vpdq(path: &PathBuf) -> Result<Vec<vpdq::VpdqFeature>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let features = vpdq::parse(&text).with_context(|| format!("{}", path.display()))?;
    anyhow::ensure!(!features.is_empty(), "{}: no vPDQ lines", path.display());
    Ok(features)
}

fn compare_vpdq(args: &CompareVpdqArgs) -> Result<ExitCode> {
    let q = read_vpdq(&args.query)?;
    let c = read_vpdq(&args.compared)?;
    let Some(m) = vpdq::compare(&q, &c, args.quality, args.distance) else {
        anyhow::bail!(
            "no frames of quality >= {} to compare (in {} or {})",
            args.quality,
            args.query.display(),
            args.compared.display()
        );
    };
    println!("query_match_percent: {:.2}", m.query_match_percent);
    println!("compared_match_percent: {:.2}", m.compared_match_percent);
    println!("match: {}", m.is_match());
    Ok(ExitCode::SUCCESS)
}

fn classify(args: &ClassifyArgs) -> Result<ExitCode> {
    let classifier = firebreak_classify::Classifier::load(&args.model)
        .with_context(|| format!("model {}", args.model.display()))?;
    let mut failed = 0;
    let mut out = BufWriter::new(std::io::stdout().lock());
    for path in &args.images {
        let img = match decode_file(path) {
            Ok(img) => img,
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
                continue;
            }
        };
        let rgb = img.to_rgb();
        let frame = firebreak_classify::RgbImage {
            width: img.width as u32,
            height: img.height as u32,
            data: &rgb,
        };
        let c = classifier.classify(&frame)?;
        let scores: serde_json::Map<String, serde_json::Value> = c
            .scores
            .iter()
            .map(|(l, s)| (l.clone(), serde_json::json!(s)))
            .collect();
        let categories: Vec<serde_json::Value> = c
            .categories
            .iter()
            .map(|k| serde_json::json!({"label": k.label, "category": k.category, "score": k.score, "threshold": k.threshold, "flagged": k.flagged}))
            .collect();
        let detections: Vec<serde_json::Value> = c
            .detections
            .iter()
            .map(|d| serde_json::json!({"label": d.label, "score": d.score, "box": d.box_source}))
            .collect();
        let line = serde_json::json!({
            "image": path.display().to_string(),
            "model": c.model,
            "model_version": c.model_version,
            "scores": scores,
            "categories": categories,
            "detections": detections,
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

fn models_check(dirs: &[PathBuf]) -> Result<ExitCode> {
    let mut bad = 0;
    for dir in dirs {
        match firebreak_classify::Classifier::load(dir) {
            Ok(c) => println!(
                "ok {}: {} {} ({:?} -> {:?})",
                dir.display(),
                c.manifest().name,
                c.version(),
                c.manifest().input.shape,
                c.manifest().output.shape
            ),
            Err(e) => {
                println!("error {}: {e}", dir.display());
                bad += 1;
            }
        }
    }
    Ok(if bad > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `firebreak openapi`: the HTTP API's OpenAPI document on stdout.
fn print_openapi() -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(crate::http::openapi::json().as_bytes())
        .and_then(|()| out.flush())
        .context("writing the OpenAPI document")?;
    Ok(ExitCode::SUCCESS)
}
