//! A client of the QEMU guest agent (`qemu-ga`) over the host end of its
//! virtio-serial channel: the `guest-sync-delimited` handshake that
//! discards whatever an earlier client left in the channel, then one
//! command at a time, each with a timeout (an agent that is not running
//! never answers: the channel itself always accepts).
//!
//! Used for QUIESCE: `guest-fsfreeze-freeze` before a snapshot and
//! `guest-fsfreeze-thaw` after it, whatever happened in between.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

/// How long the handshake may take: an agent that is up answers at once.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a freeze may take (the guest flushes its filesystems).
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a guest-agent exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The channel's socket could not be reached.
    #[error(
        "cannot reach the guest agent channel at {path}: {source}; does the domain define a guest-agent channel and run?"
    )]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No answer: the agent is not running in the guest (or is stuck).
    #[error(
        "the guest agent did not answer '{command}' within {timeout:?}; is qemu-guest-agent installed and running in the guest?"
    )]
    NotResponding {
        /// The command.
        command: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The agent refused.
    #[error("the guest agent refused '{command}': {desc}")]
    Command {
        /// The command.
        command: String,
        /// Its message.
        desc: String,
    },
    /// Something else than the agent's protocol.
    #[error("the guest agent sent an unexpected message: {0}")]
    Protocol(String),
    /// Reading or writing the channel.
    #[error("the guest agent channel failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A connected guest agent.
#[derive(Debug)]
pub struct Agent {
    stream: BufReader<UnixStream>,
}

/// The state of the guest's filesystems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeStatus {
    /// Thawed (normal).
    Thawed,
    /// Frozen.
    Frozen,
}

impl Agent {
    /// Connects to the channel at `path` and synchronises with the agent.
    ///
    /// # Errors
    /// No channel, or no agent answering within [`SYNC_TIMEOUT`].
    pub async fn connect(path: &Path) -> Result<Self, AgentError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| AgentError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        let mut agent = Self {
            stream: BufReader::new(stream),
        };
        agent.sync().await?;
        Ok(agent)
    }

    async fn sync(&mut self) -> Result<(), AgentError> {
        let id = u64::from(std::process::id()) << 20
            | u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_micros()),
            );
        let msg = json!({"execute": "guest-sync-delimited", "arguments": {"id": id}});
        let mut bytes = vec![0xff];
        bytes.extend_from_slice(msg.to_string().as_bytes());
        bytes.push(b'\n');
        self.stream.get_mut().write_all(&bytes).await?;
        let read = async {
            // Skip to the delimiter the agent sends before its answer.
            loop {
                let b = self.stream.read_u8().await?;
                if b == 0xff {
                    break;
                }
            }
            loop {
                let v = self.read_json().await?;
                if v.get("return").and_then(Value::as_u64) == Some(id) {
                    return Ok::<(), AgentError>(());
                }
            }
        };
        tokio::time::timeout(SYNC_TIMEOUT, read)
            .await
            .map_err(|_| AgentError::NotResponding {
                command: "guest-sync-delimited".into(),
                timeout: SYNC_TIMEOUT,
            })?
    }

    async fn read_json(&mut self) -> Result<Value, AgentError> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(AgentError::Protocol("the channel closed".into()));
            }
            let t = line.trim_matches(|c: char| c.is_whitespace() || c == '\u{ff}');
            if t.is_empty() {
                continue;
            }
            return serde_json::from_str(t).map_err(|e| AgentError::Protocol(format!("{e}: {t}")));
        }
    }

    /// Runs `command` with `args`, waiting at most `timeout`.
    ///
    /// # Errors
    /// The agent's refusal or no answer in time.
    pub async fn execute(
        &mut self,
        command: &str,
        args: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, AgentError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.stream.get_mut().write_all(line.as_bytes()).await?;
        let v = tokio::time::timeout(timeout, self.read_json())
            .await
            .map_err(|_| AgentError::NotResponding {
                command: command.to_string(),
                timeout,
            })??;
        if let Some(r) = v.get("return") {
            Ok(r.clone())
        } else if let Some(e) = v.get("error") {
            Err(AgentError::Command {
                command: command.to_string(),
                desc: e
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("(no description)")
                    .to_string(),
            })
        } else {
            Err(AgentError::Protocol(v.to_string()))
        }
    }

    /// `guest-ping`.
    ///
    /// # Errors
    /// No answer.
    pub async fn ping(&mut self) -> Result<(), AgentError> {
        self.execute("guest-ping", None, SYNC_TIMEOUT)
            .await
            .map(drop)
    }

    /// Freezes the guest's filesystems; returns how many.
    ///
    /// # Errors
    /// The agent's refusal (nothing frozen) or no answer.
    pub async fn freeze(&mut self) -> Result<u64, AgentError> {
        let v = self
            .execute("guest-fsfreeze-freeze", None, FREEZE_TIMEOUT)
            .await?;
        Ok(v.as_u64().unwrap_or(0))
    }

    /// Thaws them; returns how many.
    ///
    /// # Errors
    /// The agent's refusal or no answer.
    pub async fn thaw(&mut self) -> Result<u64, AgentError> {
        let v = self
            .execute("guest-fsfreeze-thaw", None, FREEZE_TIMEOUT)
            .await?;
        Ok(v.as_u64().unwrap_or(0))
    }

    /// Whether the filesystems are frozen.
    ///
    /// # Errors
    /// No answer.
    pub async fn freeze_status(&mut self) -> Result<FreezeStatus, AgentError> {
        let v = self
            .execute("guest-fsfreeze-status", None, SYNC_TIMEOUT)
            .await?;
        match v.as_str() {
            Some("frozen") => Ok(FreezeStatus::Frozen),
            Some("thawed") => Ok(FreezeStatus::Thawed),
            _ => Err(AgentError::Protocol(v.to_string())),
        }
    }
}
