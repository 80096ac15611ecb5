//! Intents: the record a multi-step operation on storage (an external
//! snapshot that moves a volume's file and creates an overlay, a plan run
//! by the executor) keeps in the owner's store while it runs, so that a
//! crash between its steps is found and recovered instead of leaving
//! storage half-changed without anyone knowing.
//!
//! The metadata journal ([`crate::store::journal`]) makes changes to
//! snapshot *files* atomic by itself. Changes to storage cannot be rolled
//! forward by the store: only the operation knows its steps. So an
//! operation registers an [`Intent`] before its first side effect (its
//! name, the step it has reached, an opaque payload saying what it is
//! doing, and the recoveries it supports), advances it as it goes, and
//! ends it when done. Every write is atomic and durable
//! ([`persist::write_atomic`]).
//!
//! Opening the store finds a leftover intent and reports it
//! ([`LoadWarning::Interrupted`](crate::store::LoadWarning::Interrupted));
//! new intents are refused until it is recovered, and
//! [`MetadataStore::recover_intent`](crate::store::MetadataStore::recover_intent)
//! hands it to the [`IntentHandler`] registered for its operation, which
//! finishes it or rolls it back (idempotently: recovery may crash too and
//! then simply runs again).
//!
//! One intent per owner at a time: the owner's exclusive lock serialises
//! writers, so a second one can only be a leftover.
//!
//! Format (`snapshots/KIND/.NAME.intent`, strict):
//!
//! ```text
//! virtsnap-intent 1\n
//! operation WORD\n
//! recoveries finish|roll-back[,...]\n
//! step N\n
//! started UNIX-SECONDS\n
//! pid PID\n
//! payload LEN\nPAYLOAD\n
//! end\n
//! ```

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;

use crate::store::MetadataStore;
use crate::store::persist;

const MAGIC: &str = "virtsnap-intent 1";
/// Largest intent read (payloads describe steps, not data).
const MAX_INTENT_BYTES: u64 = 16 << 20;

/// How an interrupted operation can be recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recovery {
    /// Carry out the remaining steps.
    Finish,
    /// Undo the steps done.
    RollBack,
}

impl Recovery {
    fn word(self) -> &'static str {
        match self {
            Self::Finish => "finish",
            Self::RollBack => "roll-back",
        }
    }

    fn from_word(word: &str) -> Option<Self> {
        match word {
            "finish" => Some(Self::Finish),
            "roll-back" => Some(Self::RollBack),
            _ => None,
        }
    }
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// A multi-step operation in progress (or interrupted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// What it is (one word, the key of its [`IntentHandler`]).
    pub operation: String,
    /// The recoveries it supports, the preferred first; never empty.
    pub recoveries: Vec<Recovery>,
    /// The steps it has completed.
    pub step: u32,
    /// When it started (seconds since the epoch).
    pub started: i64,
    /// The process that ran it.
    pub pid: u32,
    /// What it is doing, in its own format (opaque to the store).
    pub payload: String,
}

impl Intent {
    /// A new intent at step 0, started now by this process.
    #[must_use]
    pub fn new(operation: &str, recoveries: &[Recovery], payload: &str) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Self {
            operation: operation.to_string(),
            recoveries: recoveries.to_vec(),
            step: 0,
            started,
            pid: std::process::id(),
            payload: payload.to_string(),
        }
    }

    /// Checks what [`Intent::encode`] relies on.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.operation.is_empty()
            || self
                .operation
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "operation {:?} must be one word without spaces or control characters",
                self.operation
            ));
        }
        if self.recoveries.is_empty() {
            return Err(format!(
                "operation '{}' offers no recovery; offer finish, roll-back or both",
                self.operation
            ));
        }
        Ok(())
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let recoveries: Vec<&str> = self.recoveries.iter().map(|r| r.word()).collect();
        let mut out = format!(
            "{MAGIC}\noperation {}\nrecoveries {}\nstep {}\nstarted {}\npid {}\npayload {}\n",
            self.operation,
            recoveries.join(","),
            self.step,
            self.started,
            self.pid,
            self.payload.len()
        )
        .into_bytes();
        out.extend_from_slice(self.payload.as_bytes());
        out.extend_from_slice(b"\nend\n");
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut rest = bytes;
        let mut line = |what: &str| -> Result<String, String> {
            let at = rest
                .iter()
                .position(|&b| b == b'\n')
                .ok_or_else(|| format!("truncated before {what}"))?;
            let text = std::str::from_utf8(&rest[..at])
                .map_err(|_| format!("{what} is not UTF-8"))?
                .to_string();
            rest = &rest[at + 1..];
            Ok(text)
        };
        if line("the header")? != MAGIC {
            return Err(format!("not a '{MAGIC}' file"));
        }
        let field = |text: String, key: &str| -> Result<String, String> {
            text.strip_prefix(key)
                .and_then(|v| v.strip_prefix(' '))
                .map(str::to_string)
                .ok_or_else(|| format!("expected '{key} ...', found {text:?}"))
        };
        let operation = field(line("operation")?, "operation")?;
        let recoveries = field(line("recoveries")?, "recoveries")?
            .split(',')
            .map(|w| Recovery::from_word(w).ok_or_else(|| format!("unknown recovery {w:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        let number = |text: String, key: &str| -> Result<String, String> {
            let v = field(text, key)?;
            let digits = v.strip_prefix('-').unwrap_or(&v);
            if digits.is_empty()
                || !digits.bytes().all(|b| b.is_ascii_digit())
                || (digits.len() > 1 && digits.starts_with('0'))
            {
                return Err(format!("{key} {v:?} is not a number"));
            }
            Ok(v)
        };
        let step = number(line("step")?, "step")?
            .parse()
            .map_err(|e| format!("step: {e}"))?;
        let started = number(line("started")?, "started")?
            .parse()
            .map_err(|e| format!("started: {e}"))?;
        let pid = number(line("pid")?, "pid")?
            .parse()
            .map_err(|e| format!("pid: {e}"))?;
        let len: usize = number(line("payload")?, "payload")?
            .parse()
            .map_err(|e| format!("payload length: {e}"))?;
        if rest.len() < len {
            return Err("truncated payload".to_string());
        }
        let payload = std::str::from_utf8(&rest[..len])
            .map_err(|_| "payload is not UTF-8".to_string())?
            .to_string();
        if &rest[len..] != b"\nend\n" {
            return Err("missing 'end' after the payload".to_string());
        }
        let intent = Self {
            operation,
            recoveries,
            step,
            started,
            pid,
            payload,
        };
        intent.check()?;
        Ok(intent)
    }
}

/// Recovers the interrupted intents of one operation; the executor and
/// the drivers register one per multi-step operation they run.
pub trait IntentHandler {
    /// The operation word its intents carry.
    fn operation(&self) -> &str;

    /// Finishes or rolls back `intent` (one of its offered recoveries),
    /// whatever step it stopped at, changing the owner's snapshot
    /// metadata through `store` as needed. Must be idempotent: a crash
    /// during recovery leaves the intent in place and recovery runs again.
    ///
    /// # Errors
    /// Why it could not; the intent stays for another try.
    fn recover(
        &self,
        store: &mut MetadataStore,
        intent: &Intent,
        how: Recovery,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// The handler of an intent whose storage part its operation has done
/// itself (the drivers are async, recovery through the store is not):
/// nothing is left but clearing the record.
pub(crate) struct StorageDone<'a>(pub &'a str);

impl IntentHandler for StorageDone<'_> {
    fn operation(&self) -> &str {
        self.0
    }

    fn recover(
        &self,
        _store: &mut MetadataStore,
        _intent: &Intent,
        _how: Recovery,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }
}

/// Reads the intent at `path`: `None` when there is none.
pub(crate) fn read(path: &Path) -> io::Result<Option<Result<Intent, String>>> {
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
        Ok(meta) if meta.len() > MAX_INTENT_BYTES => {
            return Ok(Some(Err(format!("larger than {MAX_INTENT_BYTES} bytes"))));
        }
        Ok(_) => {}
    }
    match fs::read(path) {
        Ok(bytes) => Ok(Some(Intent::decode(&bytes))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `intent` to `path` atomically and durably.
pub(crate) fn write(path: &Path, intent: &Intent) -> io::Result<()> {
    let (dir, name) = split(path)?;
    persist::write_atomic(dir, name, &intent.encode())
}

/// Removes the intent at `path` durably.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    let (dir, name) = split(path)?;
    persist::remove_durable(dir, name).map(|_| ())
}

fn split(path: &Path) -> io::Result<(&Path, &str)> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidInput, "not a file path");
    let dir = path.parent().ok_or_else(invalid)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(invalid)?;
    Ok((dir, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Intent {
        Intent {
            operation: "volume-external-create".into(),
            recoveries: vec![Recovery::RollBack, Recovery::Finish],
            step: 2,
            started: 1_700_000_000,
            pid: 4242,
            payload: "<step>\nend\n</step>\u{e9}".into(),
        }
    }

    #[test]
    fn test_intent_round_trips_and_is_the_documented_format() {
        let intent = sample();
        let bytes = intent.encode();
        let text = String::from_utf8(bytes.clone()).expect("UTF-8");
        assert!(text.starts_with(
            "virtsnap-intent 1\noperation volume-external-create\nrecoveries roll-back,finish\nstep 2\n"
        ));
        assert!(text.ends_with("\u{e9}\nend\n"));
        assert_eq!(Intent::decode(&bytes), Ok(intent));
    }

    #[test]
    fn test_intent_every_truncation_is_refused() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(Intent::decode(&bytes[..len]).is_err(), "length {len}");
        }
    }

    #[test]
    fn test_intent_bad_fields_are_refused_with_their_name() {
        let good = String::from_utf8(sample().encode()).expect("UTF-8");
        for (from, to, says) in [
            (
                "recoveries roll-back,finish",
                "recoveries undo",
                "unknown recovery",
            ),
            (
                "recoveries roll-back,finish",
                "recoveries ",
                "unknown recovery",
            ),
            ("step 2", "step 02", "step"),
            ("step 2", "step -1", "step"),
            ("pid 4242", "pid x", "pid"),
            (
                "operation volume-external-create",
                "operation ",
                "operation",
            ),
            ("virtsnap-intent 1", "virtsnap-intent 2", "not a"),
        ] {
            let bad = good.replacen(from, to, 1);
            let err = Intent::decode(bad.as_bytes()).expect_err(to);
            assert!(err.contains(says), "{to}: {err}");
        }
    }

    #[test]
    fn test_intent_check_refuses_spaces_and_no_recovery() {
        assert!(
            Intent::new("two words", &[Recovery::Finish], "")
                .check()
                .is_err()
        );
        let err = Intent::new("op", &[], "").check().expect_err("no recovery");
        assert!(err.contains("offer finish, roll-back or both"), "{err}");
    }
}
