//! `cargo xtask bench conf`: parse + format throughput of snapshot-conf over
//! libvirt's snapshot XML corpus, on one core, compared in the same run with
//! libxml2 (`xmllint`, the parser libvirt itself uses) on the same bytes.
//!
//! Each corpus document is parsed with the flags libvirt's tests use for it
//! (redefine/internal where it carries state and `<active>`), then
//! formatted. Throughput = input bytes / wall time, median of several
//! rounds. The target of the snapshot-conf issue is 100 MB/s.
//!
//! Options: `--rounds N` (default 7), `--seconds S` per round (default 0.5).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use snapshot_conf::{DomainSnapshotDef, FormatFlags, FormatOptions, ParseFlags, ParseOptions};

const TARGET_MB_S: f64 = 100.0;

struct Doc {
    name: String,
    text: String,
    parse: ParseOptions,
    format: FormatOptions,
}

fn corpus() -> Vec<Doc> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/libvirt");
    let mut docs = Vec::new();
    for sub in ["xml2xml-in", "xml2xml-out", "virsh"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(sub))
            .expect("corpus directory")
            .map(|e| e.expect("dir entry").path())
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).expect("corpus file");
            let candidates = [
                ParseFlags::REDEFINE | ParseFlags::INTERNAL,
                ParseFlags::REDEFINE,
                ParseFlags::empty(),
            ];
            let Some(flags) = candidates
                .into_iter()
                .find(|f| DomainSnapshotDef::parse(&text, &ParseOptions::new(*f)).is_ok())
            else {
                continue; // no flag combination accepts it (none today)
            };
            let mut format = FormatFlags::SECURE;
            if flags.contains(ParseFlags::INTERNAL) {
                format |= FormatFlags::INTERNAL | FormatFlags::CURRENT;
            }
            docs.push(Doc {
                name: format!(
                    "{sub}/{}",
                    path.file_name().unwrap_or_default().to_string_lossy()
                ),
                text,
                parse: ParseOptions::new(flags),
                format: FormatOptions::new(format),
            });
        }
    }
    docs
}

/// Runs `f` over the corpus repeatedly for about `budget`; returns MB/s.
fn measure(docs: &[Doc], budget: Duration, mut f: impl FnMut(&Doc)) -> f64 {
    let bytes_per_pass: usize = docs.iter().map(|d| d.text.len()).sum();
    let start = Instant::now();
    let mut passes = 0u32;
    while start.elapsed() < budget || passes == 0 {
        for d in docs {
            f(d);
        }
        passes += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    f64::from(passes) * bytes_per_pass as f64 / secs / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// libxml2 on the same bytes: one document holding `copies` of every
/// corpus root element, parsed (`--noout`) and parsed + re-formatted
/// (`--format`). Returns MB/s for both, or why it could not run.
fn libxml2(docs: &[Doc], copies: usize) -> Result<(f64, f64), String> {
    let dir = std::env::temp_dir().join(format!("virtsnap-bench-conf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join("corpus.xml");
    let mut big = String::from("<corpus>\n");
    for _ in 0..copies {
        for d in docs {
            big.push_str(&d.text);
        }
    }
    big.push_str("</corpus>\n");
    std::fs::write(&file, &big).map_err(|e| e.to_string())?;
    let run = |args: &[&str]| -> Result<f64, String> {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let start = Instant::now();
            let status = Command::new("xmllint")
                .args(args)
                .arg(&file)
                .stdout(Stdio::null())
                .status()
                .map_err(|e| format!("xmllint: {e} (install libxml2-utils)"))?;
            if !status.success() {
                return Err(format!("xmllint exited with {status}"));
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        Ok(big.len() as f64 / best / 1e6)
    };
    let result = run(&["--noout"]).and_then(|p| Ok((p, run(&["--format"])?)));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn main() {
    let rounds: usize = arg("--rounds").and_then(|s| s.parse().ok()).unwrap_or(7);
    let seconds: f64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(0.5);
    let budget = Duration::from_secs_f64(seconds);
    let docs = corpus();
    let total: usize = docs.iter().map(|d| d.text.len()).sum();
    println!(
        "snapshot-conf bench: {} corpus documents, {} bytes per pass, {rounds} rounds of {seconds} s, one thread",
        docs.len(),
        total
    );
    let largest = docs
        .iter()
        .max_by_key(|d| d.text.len())
        .map(|d| d.name.as_str());
    println!("largest document: {}", largest.unwrap_or("-"));

    let parsed: Vec<DomainSnapshotDef> = docs
        .iter()
        .map(|d| {
            DomainSnapshotDef::parse(&d.text, &d.parse)
                .expect("classified")
                .def
        })
        .collect();

    let parse_format = median(
        (0..rounds)
            .map(|_| {
                measure(&docs, budget, |d| {
                    let p = DomainSnapshotDef::parse(black_box(&d.text), &d.parse).expect("parses");
                    black_box(p.def.format(&d.format));
                })
            })
            .collect(),
    );
    let parse_only = median(
        (0..rounds)
            .map(|_| {
                measure(&docs, budget, |d| {
                    black_box(
                        DomainSnapshotDef::parse(black_box(&d.text), &d.parse).expect("parses"),
                    );
                })
            })
            .collect(),
    );
    let mut i = 0usize;
    let format_only = median(
        (0..rounds)
            .map(|_| {
                measure(&docs, budget, |d| {
                    black_box(parsed[i % parsed.len()].format(&d.format));
                    i += 1;
                })
            })
            .collect(),
    );

    println!();
    println!("{:<28} {:>10}", "snapshot-conf", "MB/s");
    println!("{:<28} {:>10.1}", "parse + format", parse_format);
    println!("{:<28} {:>10.1}", "parse only", parse_only);
    println!("{:<28} {:>10.1}", "format only (input bytes)", format_only);

    println!();
    match libxml2(&docs, 400) {
        Ok((parse, format)) => {
            println!("{:<28} {:>10}", "libxml2 (xmllint)", "MB/s");
            println!("{:<28} {:>10.1}", "parse (--noout)", parse);
            println!("{:<28} {:>10.1}", "parse + format (--format)", format);
            println!();
            println!(
                "ratio snapshot-conf / libxml2: parse {:.2}x, parse + format {:.2}x",
                parse_only / parse,
                parse_format / format
            );
            println!(
                "(libxml2 builds a generic DOM; snapshot-conf also validates and types the snapshot)"
            );
        }
        Err(e) => println!("libxml2 comparison not run: {e}"),
    }
    println!();
    if parse_format >= TARGET_MB_S {
        println!("target: parse + format {parse_format:.1} MB/s >= {TARGET_MB_S} MB/s: met");
    } else {
        println!("target: parse + format {parse_format:.1} MB/s < {TARGET_MB_S} MB/s: NOT met");
    }
}
