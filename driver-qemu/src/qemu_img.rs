//! Running `qemu-img`: finding it, its version, and one call as an async
//! child process whose failure becomes a [`DriverError::Tool`] naming the
//! command and what it said. Long calls (`commit`, `rebase`) run with
//! `-p` and their percentages are passed on as progress.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use snapshot_core::driver::{DriverError, Progress};
use tokio::io::AsyncReadExt as _;
use tokio::process::Command;

/// The `qemu-img` program.
#[derive(Debug, Clone)]
pub struct QemuImg {
    program: PathBuf,
}

impl Default for QemuImg {
    fn default() -> Self {
        Self::new("qemu-img")
    }
}

/// A parsed `major.minor.micro` version.
pub type Version = (u32, u32, u32);

/// The version in `qemu-img --version`'s first line
/// (`qemu-img version 7.2.19 (Debian ...)`).
#[must_use]
pub fn parse_version(text: &str) -> Option<Version> {
    let rest = text.lines().next()?.split("version ").nth(1)?;
    let word = rest.split_whitespace().next()?;
    let mut parts = word.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .ok()
    });
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let micro = parts.next().flatten().unwrap_or(0);
    Some((major, minor, micro))
}

fn os(s: impl AsRef<Path>) -> String {
    s.as_ref().to_string_lossy().into_owned()
}

impl QemuImg {
    /// `program` (a name looked up in `PATH`, or a path).
    #[must_use]
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }

    fn tool_error(&self, args: &[String], status: String, stderr: &str) -> DriverError {
        DriverError::Tool {
            tool: os(&self.program),
            args: args.to_vec(),
            status,
            stderr: stderr.trim().to_string(),
        }
    }

    fn spawn_error(&self, args: &[String], e: &std::io::Error) -> DriverError {
        let stderr = if e.kind() == std::io::ErrorKind::NotFound {
            "not found; install QEMU's tools (Debian: apt-get install qemu-utils)".to_string()
        } else {
            e.to_string()
        };
        self.tool_error(args, "could not start".into(), &stderr)
    }

    /// Its version.
    ///
    /// # Errors
    /// It cannot be run or prints no version.
    pub async fn version(&self) -> Result<Version, DriverError> {
        let args = vec!["--version".to_string()];
        let out = self.run(&args).await?;
        parse_version(&out).ok_or_else(|| {
            self.tool_error(
                &args,
                "exit status 0".into(),
                &format!("printed no version: {out}"),
            )
        })
    }

    /// Runs it with `args` and returns its standard output.
    ///
    /// # Errors
    /// It cannot be started or exits unsuccessfully.
    pub async fn run(&self, args: &[String]) -> Result<String, DriverError> {
        tracing::debug!(program = %self.program.display(), ?args, "running");
        let out = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| self.spawn_error(args, &e))?;
        if !out.status.success() {
            return Err(self.tool_error(
                args,
                out.status.to_string(),
                &String::from_utf8_lossy(&out.stderr),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs it with `args` (which include `-p`), reporting its
    /// percentages as progress out of `total`.
    ///
    /// # Errors
    /// As [`QemuImg::run`].
    pub async fn run_with_progress(
        &self,
        args: &[String],
        total: u64,
        progress: Option<&Progress>,
    ) -> Result<(), DriverError> {
        let Some(progress) = progress else {
            let quiet: Vec<String> = args.iter().filter(|a| *a != "-p").cloned().collect();
            return self.run(&quiet).await.map(drop);
        };
        tracing::debug!(program = %self.program.display(), ?args, "running");
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| self.spawn_error(args, &e))?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let err_task = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        let mut pending = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            let n = stdout.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.iter().position(|b| *b == b'\r' || *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if let Some(pct) = parse_percent(&String::from_utf8_lossy(&line)) {
                    progress(scale(pct, total), total);
                }
            }
        }
        let status = child.wait().await.map_err(|e| self.spawn_error(args, &e))?;
        let stderr = err_task.await.unwrap_or_default();
        if !status.success() {
            return Err(self.tool_error(args, status.to_string(), &stderr));
        }
        progress(total, total);
        Ok(())
    }
}

/// `pct` percent of `total`.
fn scale(pct: f64, total: u64) -> u64 {
    let frac = (pct / 100.0).clamp(0.0, 1.0);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let done = (frac * total as f64) as u64;
    done.min(total)
}

/// The percentage in one of `qemu-img -p`'s lines (`    (42.00/100%)`).
fn parse_percent(line: &str) -> Option<f64> {
    let start = line.find('(')? + 1;
    let end = start + line[start..].find('/')?;
    line[start..end].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_percentages_parse() {
        assert_eq!(
            parse_version("qemu-img version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u7)\nCopyright"),
            Some((7, 2, 19))
        );
        assert_eq!(
            parse_version("qemu-img version 10.0.2 (Debian)"),
            Some((10, 0, 2))
        );
        assert_eq!(parse_version("something else"), None);
        assert_eq!(parse_percent("    (42.50/100%)"), Some(42.5));
        assert_eq!(parse_percent("no percent"), None);
        assert_eq!(scale(50.0, 1000), 500);
        assert_eq!(scale(150.0, 1000), 1000);
    }
}
