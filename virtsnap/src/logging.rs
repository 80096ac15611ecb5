//! Logging: `tracing` events of the CLI (and of any library that emits
//! them) go to stderr through `tracing-subscriber`, filtered by the
//! `-v`/`--debug` flags or, when neither is given, by `RUST_LOG`
//! (`RUST_LOG=virtsnap=debug`); without either, only warnings and errors.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// The filter directives for the flags: `None` when no flag asks for more
/// than the default.
fn flag_directive(verbose: u8, debug: bool) -> Option<&'static str> {
    match (verbose, debug) {
        (3.., _) => Some("trace"),
        (2, _) | (_, true) => Some("debug"),
        (1, false) => Some("info"),
        (0, false) => None,
    }
}

/// The filter: the flags' level when given, else `RUST_LOG` when set and
/// not empty, else `warn`.
fn directives(verbose: u8, debug: bool, rust_log: Option<String>) -> String {
    match flag_directive(verbose, debug) {
        Some(level) => level.to_string(),
        None => rust_log
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "warn".to_string()),
    }
}

/// Installs the stderr subscriber. Called once, before the command runs.
pub(crate) fn init(verbose: u8, debug: bool) {
    let rust_log = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let filter = EnvFilter::builder().parse_lossy(directives(verbose, debug, rust_log));
    // A second init (tests calling `run` twice) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_flags_choose_the_level_and_override_rust_log() {
        assert_eq!(directives(0, false, None), "warn");
        assert_eq!(directives(1, false, None), "info");
        assert_eq!(directives(2, false, None), "debug");
        assert_eq!(directives(0, true, None), "debug");
        assert_eq!(directives(5, true, None), "trace");
        assert_eq!(
            directives(1, false, Some("snapshot_core=trace".into())),
            "info"
        );
    }

    #[test]
    fn test_rust_log_is_used_without_flags() {
        assert_eq!(
            directives(0, false, Some("virtsnap=debug".into())),
            "virtsnap=debug"
        );
        assert_eq!(directives(0, false, Some("  ".into())), "warn");
    }
}
