//! `firebreak replay`, `firebreak labels` and `firebreak signals`: policies replayed
//! over the signal log, labels, and log maintenance (see [`crate::signals`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use firebreak_matching::matcher::{MatchConfig, Matcher};
use firebreak_matching::store::BankStore;
use firebreak_policy::config::PolicyConfig;
use firebreak_policy::policy::Policy;

use super::banks::DataDir;
use crate::signals::eval::{self, Evaluation};
use crate::signals::replay::{Rematch, ReplayOptions, replay};
use crate::signals::report::{self, CurvePoint, ReportInput};
use crate::signals::{labels, log, sweep, synth};

/// `firebreak replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The policy file (TOML) to replay.
    #[arg(long)]
    policy: PathBuf,
    /// A second policy, compared with the first (per-stream differences, timelines).
    #[arg(long)]
    compare: Option<PathBuf>,
    /// The signal log directory (default: `signals/` in the data directory).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Labels (JSON lines; default: the log's `labels.jsonl`).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Only this tenant's streams and labels.
    #[arg(long)]
    tenant: Option<String>,
    /// Only signals at or after this time (Unix ms or RFC 3339 UTC).
    #[arg(long, value_parser = time_arg)]
    from: Option<u64>,
    /// Only signals before this time (Unix ms or RFC 3339 UTC).
    #[arg(long, value_parser = time_arg)]
    to: Option<u64>,
    /// Re-match the recorded hashes against the banks in this directory.
    #[arg(long)]
    banks: Option<PathBuf>,
    /// Hash-match distance: without `--banks`, recorded matches above it are dropped
    /// (at most 31, the recorded candidates' range); with `--banks`, the query distance.
    #[arg(long)]
    match_distance: Option<u32>,
    /// Live video window of a re-match (media seconds).
    #[arg(long, default_value_t = 10.0)]
    window_secs: f64,
    /// Vary a parameter over a grid: `RULE.FIELD=START:END:STEP` (at most twice).
    #[arg(long)]
    sweep: Vec<String>,
    /// Recommend the sweep's setting for this precision.
    #[arg(long)]
    target_precision: Option<f64>,
    /// Write a self-contained HTML report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the (first) policy's decisions here, as JSON lines.
    #[arg(long)]
    decisions: Option<PathBuf>,
    /// Threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// `firebreak labels ...`.
#[derive(Debug, Subcommand)]
pub enum LabelsCommand {
    /// Import labels from CSV (`stream,start,end,label[,tenant[,note]]`) into the log's
    /// labels; a file with any bad line imports nothing.
    Import {
        /// The signal log directory (default: `signals/` in the data directory).
        #[arg(long)]
        log: Option<PathBuf>,
        /// The tenant of lines that name none.
        #[arg(long)]
        tenant: String,
        /// The CSV file.
        file: PathBuf,
    },
}

/// `firebreak signals ...`.
#[derive(Debug, Subcommand)]
pub enum SignalsCommand {
    /// Erase a tenant's recordings from the closed segments of the log.
    Erase {
        /// The signal log directory (default: `signals/` in the data directory).
        #[arg(long)]
        log: Option<PathBuf>,
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Generate a synthetic labelled log (speed measurements, tests).
    #[command(hide = true)]
    Generate {
        /// Where.
        #[arg(long)]
        out: PathBuf,
        /// Streams.
        #[arg(long, default_value_t = 100)]
        streams: usize,
        /// Hours.
        #[arg(long, default_value_t = 24.0)]
        hours: f64,
        /// Frames a second.
        #[arg(long, default_value_t = 2.0)]
        fps: f64,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn time_arg(s: &str) -> Result<u64, String> {
    labels::parse_time(s).ok_or_else(|| format!("{s:?}: not Unix ms or RFC 3339 UTC"))
}

fn log_dir(data: &DataDir, log: Option<&Path>) -> PathBuf {
    log.map_or_else(|| data.data_dir.join("signals"), Path::to_owned)
}

fn load_policy(path: &Path) -> Result<PolicyConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    PolicyConfig::from_toml(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// `firebreak replay`.
pub fn run_replay(data: &DataDir, a: &ReplayArgs) -> Result<ExitCode> {
    let dir = log_dir(data, a.log.as_deref());
    let base = load_policy(&a.policy)?;
    let mut configs = vec![base.clone()];
    if let Some(c) = &a.compare {
        configs.push(load_policy(c)?);
    }
    if a.sweep.len() > 2 {
        bail!("--sweep: at most two parameters");
    }
    let axes = a
        .sweep
        .iter()
        .map(|s| sweep::parse_axis(s, &base))
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| anyhow!("--sweep {e}"))?;
    let settings = if axes.is_empty() {
        Vec::new()
    } else {
        sweep::grid(&base, &axes)
    };
    let fixed = configs.len();
    configs.extend(settings.iter().filter_map(|s| s.config.clone().ok()));
    let policies: Vec<Arc<Policy>> = configs
        .into_iter()
        .map(|c| Arc::new(Policy::new(c)))
        .collect();

    let rematch = match (&a.banks, a.match_distance) {
        (Some(banks), distance) => {
            let set = BankStore::new(banks.clone())
                .load_all()
                .with_context(|| format!("{}", banks.display()))?;
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let config = MatchConfig {
                pdq_distance: distance.unwrap_or(MatchConfig::default().pdq_distance),
                ..MatchConfig::default()
            };
            Some(Rematch::Banks {
                matcher: Box::new(Matcher::new(
                    set.banks.iter().map(|b| &b.bank),
                    config,
                    threads,
                )),
                window_secs: a.window_secs,
            })
        }
        (None, Some(d)) if d > MatchConfig::default().pdq_distance => bail!(
            "--match-distance {d}: recorded candidates go up to {}; a wider distance needs --banks",
            MatchConfig::default().pdq_distance
        ),
        (None, Some(d)) => Some(Rematch::Narrow(d)),
        (None, None) => None,
    };
    let opts = ReplayOptions {
        tenant: a.tenant.clone(),
        from_ms: a.from,
        to_ms: a.to,
        rematch,
        threads: a.threads,
    };
    let mut all_labels = match &a.labels {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(serde_json::from_str)
                .collect::<Result<Vec<labels::Label>, _>>()
                .with_context(|| format!("{}", p.display()))?
        }
        None => labels::load(&dir)?,
    };
    if let Some(t) = &a.tenant {
        all_labels.retain(|l| &l.tenant == t);
    }

    let started = Instant::now();
    let result = replay(&dir, &policies, &opts)?;
    let elapsed = started.elapsed();
    eprintln!(
        "replayed {} frames with {} policies in {:.2} s ({:.0} frames/s)",
        result.frames,
        policies.len(),
        elapsed.as_secs_f64(),
        result.frames as f64 / elapsed.as_secs_f64().max(1e-9)
    );

    let evaluations: Vec<Evaluation> = policies
        .iter()
        .enumerate()
        .map(|(i, p)| eval::evaluate(&result, i, p, &all_labels))
        .collect();
    let mut out = eval::summary(&result, &all_labels);
    for e in &evaluations[..fixed] {
        out.push_str(&eval::format(e));
    }
    if fixed == 2 {
        out.push_str("per stream escalations (first policy -> second), where they differ:\n");
        for (stream, (x, y)) in eval::per_stream(&result, 0, 1) {
            if x != y {
                out.push_str(&format!("  {stream}: {x} -> {y}\n"));
            }
        }
    }
    let mut curve = Vec::new();
    if !axes.is_empty() {
        let mut sweep_evals = Vec::new();
        let mut next = fixed;
        for s in &settings {
            if s.config.is_ok() {
                let e = evaluations[next].clone();
                curve.push(CurvePoint {
                    label: axes
                        .iter()
                        .zip(&s.values)
                        .map(|(ax, v)| format!("{}={}", ax.name(), sweep::trim(*v)))
                        .collect::<Vec<_>>()
                        .join(" "),
                    recall: e.policy.recall().unwrap_or(0.0),
                    precision: e.policy.precision().unwrap_or(0.0),
                });
                sweep_evals.push(Some(e));
                next += 1;
            } else {
                sweep_evals.push(None);
            }
        }
        out.push_str(&sweep::format(
            &axes,
            &settings,
            &sweep_evals,
            a.target_precision,
        ));
    }
    std::io::stdout().write_all(out.as_bytes())?;

    if let Some(path) = &a.decisions {
        let mut text = String::new();
        for d in &result.decisions[0] {
            text.push_str(&serde_json::to_string(d)?);
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("{}", path.display()))?;
    }
    if let Some(path) = &a.report {
        let html = report::render(&ReportInput {
            replay: &result,
            labels: &all_labels,
            policies: &policies[..fixed],
            evaluations: &evaluations[..fixed],
            curve,
            max_streams: 50,
        });
        std::fs::write(path, html).with_context(|| format!("{}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `firebreak labels ...`.
pub fn run_labels(data: &DataDir, c: &LabelsCommand) -> Result<ExitCode> {
    match c {
        LabelsCommand::Import { log, tenant, file } => {
            let dir = log_dir(data, log.as_deref());
            let text =
                std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
            match labels::parse_csv(&text, tenant) {
                Ok(list) => {
                    labels::append(&dir, &list)?;
                    println!(
                        "imported {} labels into {}",
                        list.len(),
                        labels::path(&dir).display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(issues) => {
                    for i in &issues {
                        eprintln!("{}: {i}", file.display());
                    }
                    eprintln!("nothing imported ({} problems)", issues.len());
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}

/// `firebreak signals ...`.
pub fn run_signals(data: &DataDir, c: &SignalsCommand) -> Result<ExitCode> {
    match c {
        SignalsCommand::Erase { log, tenant } => {
            let dir = log_dir(data, log.as_deref());
            let n = log::erase_tenant(&dir, tenant)?;
            println!("erased {n} records of tenant {tenant}");
            Ok(ExitCode::SUCCESS)
        }
        SignalsCommand::Generate {
            out,
            streams,
            hours,
            fps,
            seed,
        } => {
            let started = Instant::now();
            let frames = synth::generate(
                out,
                synth::SynthSpec {
                    streams: *streams,
                    hours: *hours,
                    fps: *fps,
                    seed: *seed,
                    start_ms: 1_800_000_000_000,
                },
            )?;
            let bytes: u64 = log::segments(out)?
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum();
            println!(
                "generated {frames} frames, {bytes} bytes ({:.1} bytes/frame) in {:.1} s",
                bytes as f64 / frames.max(1) as f64,
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
