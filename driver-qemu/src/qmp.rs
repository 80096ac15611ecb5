//! A QMP client: one connection to a QEMU monitor socket, commands with
//! timeouts, events with QEMU's timestamps, and file descriptors passed
//! with a command (`getfd`), which is how memory goes to a file without a
//! shell in between.
//!
//! Messages are kept as JSON values rather than generated types: QEMU
//! versions add commands, arguments and events, and a client that cannot
//! decode an event it has never heard of must not lose the connection
//! (the published `qapi` crates do: their event enum is closed, and a
//! decode error ends the stream). The few commands the hypervisor uses
//! are spelled out where they are used, next to the versions that have
//! them.

use std::collections::HashMap;
use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Mutex, broadcast, oneshot};

/// How long a command may take unless the caller says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QmpError {
    /// The socket could not be reached.
    #[error(
        "cannot connect to the QEMU monitor at {path}: {source}; is the domain running (domstate)?"
    )]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The socket accepted but QEMU did not greet in time: another client
    /// holds the monitor (QEMU serves one at a time), or QEMU hangs.
    #[error(
        "the QEMU monitor at {0} did not answer in time; another program may hold it (QEMU serves one monitor client at a time), or QEMU hangs"
    )]
    NoGreeting(PathBuf),
    /// A command got no reply in time.
    #[error("QEMU did not answer '{command}' within {timeout:?}")]
    Timeout {
        /// The command.
        command: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// QEMU refused a command.
    #[error("QEMU refused '{command}': {desc} ({class})")]
    Command {
        /// The command.
        command: String,
        /// QEMU's error class (`GenericError`, `DeviceNotFound`, ...).
        class: String,
        /// QEMU's message.
        desc: String,
    },
    /// The connection ended (QEMU quit or was killed).
    #[error("the connection to QEMU was lost: {0}")]
    Disconnected(String),
    /// QEMU sent something that is not QMP.
    #[error("QEMU sent an unexpected message: {0}")]
    Protocol(String),
    /// Writing to the socket.
    #[error("cannot write to the QEMU monitor: {0}")]
    Io(#[from] std::io::Error),
}

impl QmpError {
    /// QEMU's error class, for a refused command.
    #[must_use]
    pub fn class(&self) -> Option<&str> {
        match self {
            Self::Command { class, .. } => Some(class),
            _ => None,
        }
    }
}

/// QEMU's version, from the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct QemuVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Micro.
    pub micro: u32,
}

impl QemuVersion {
    /// At least `major.minor`.
    #[must_use]
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl std::fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// One event, as QEMU sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    /// Its name (`STOP`, `RESUME`, `JOB_STATUS_CHANGE`, ...).
    pub name: String,
    /// Its data (`{}` when none).
    pub data: Value,
    /// When QEMU emitted it, since the Unix epoch (host clock).
    pub timestamp: Duration,
}

type Pending = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Result<Value, QmpError>>>>>;

/// A connected QMP monitor. Commands may be issued from several tasks;
/// replies are matched by id.
#[derive(Debug)]
pub struct Qmp {
    path: PathBuf,
    writer: Mutex<OwnedWriteHalf>,
    pending: Pending,
    events: broadcast::Sender<QmpEvent>,
    next_id: AtomicU64,
    version: QemuVersion,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Qmp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn parse_event(v: &Value) -> Option<QmpEvent> {
    let name = v.get("event")?.as_str()?.to_string();
    let ts = v.get("timestamp");
    let secs = ts
        .and_then(|t| t.get("seconds"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let micros = ts
        .and_then(|t| t.get("microseconds"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some(QmpEvent {
        name,
        data: v.get("data").cloned().unwrap_or_else(|| json!({})),
        timestamp: Duration::from_secs(secs) + Duration::from_micros(micros),
    })
}

fn parse_version(greeting: &Value) -> Option<QemuVersion> {
    let q = greeting.get("QMP")?.get("version")?.get("qemu")?;
    let n = |k: &str| {
        q.get(k)
            .and_then(Value::as_u64)
            .and_then(|x| u32::try_from(x).ok())
    };
    Some(QemuVersion {
        major: n("major")?,
        minor: n("minor")?,
        micro: n("micro")?,
    })
}

async fn read_json(lines: &mut BufReader<OwnedReadHalf>) -> Result<Option<Value>, QmpError> {
    let mut line = String::new();
    loop {
        line.clear();
        let n = lines
            .read_line(&mut line)
            .await
            .map_err(|e| QmpError::Disconnected(e.to_string()))?;
        if n == 0 {
            return Ok(None);
        }
        if line.trim().is_empty() {
            continue;
        }
        return serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| QmpError::Protocol(format!("{e}: {}", line.trim())));
    }
}

impl Qmp {
    /// Connects to the monitor at `path`, reads QEMU's greeting and
    /// leaves capabilities negotiation mode, all within `timeout`.
    ///
    /// # Errors
    /// No socket, no greeting in time (another client holds the monitor),
    /// or not a QMP monitor.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        let (read, write) = stream.into_split();
        let mut lines = BufReader::new(read);
        let greeting = tokio::time::timeout(timeout, read_json(&mut lines))
            .await
            .map_err(|_| QmpError::NoGreeting(path.to_path_buf()))??
            .ok_or_else(|| QmpError::Disconnected("closed before greeting".into()))?;
        let version = parse_version(&greeting)
            .ok_or_else(|| QmpError::Protocol(format!("not a QMP greeting: {greeting}")))?;
        let pending: Pending = Arc::default();
        let (events, _) = broadcast::channel(1024);
        let reader = tokio::spawn(Self::read_loop(lines, pending.clone(), events.clone()));
        let qmp = Self {
            path: path.to_path_buf(),
            writer: Mutex::new(write),
            pending,
            events,
            next_id: AtomicU64::new(1),
            version,
            reader,
        };
        qmp.execute_with_timeout("qmp_capabilities", None, timeout)
            .await?;
        Ok(qmp)
    }

    async fn read_loop(
        mut lines: BufReader<OwnedReadHalf>,
        pending: Pending,
        events: broadcast::Sender<QmpEvent>,
    ) {
        let why = loop {
            match read_json(&mut lines).await {
                Ok(Some(v)) => {
                    if let Some(ev) = parse_event(&v) {
                        // No subscriber is fine.
                        let _ = events.send(ev);
                        continue;
                    }
                    let Some(id) = v.get("id").and_then(Value::as_u64) else {
                        tracing::warn!(message = %v, "QMP message without id ignored");
                        continue;
                    };
                    let reply = if let Some(r) = v.get("return") {
                        Ok(r.clone())
                    } else if let Some(e) = v.get("error") {
                        Err((
                            e.get("class")
                                .and_then(Value::as_str)
                                .unwrap_or("GenericError")
                                .to_string(),
                            e.get("desc")
                                .and_then(Value::as_str)
                                .unwrap_or("(no description)")
                                .to_string(),
                        ))
                    } else {
                        tracing::warn!(message = %v, "QMP reply without return or error");
                        continue;
                    };
                    let waiter = pending.lock().ok().and_then(|mut p| p.remove(&id));
                    if let Some(w) = waiter {
                        let _ = w.send(reply.map_err(|(class, desc)| QmpError::Command {
                            command: String::new(),
                            class,
                            desc,
                        }));
                    }
                }
                Ok(None) => break "QEMU closed the monitor".to_string(),
                Err(e) => break e.to_string(),
            }
        };
        if let Ok(mut p) = pending.lock() {
            for (_, w) in p.drain() {
                let _ = w.send(Err(QmpError::Disconnected(why.clone())));
            }
        }
    }

    /// QEMU's version.
    #[must_use]
    pub fn version(&self) -> QemuVersion {
        self.version
    }

    /// The socket.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Events from now on.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<QmpEvent> {
        self.events.subscribe()
    }

    /// Runs `command` with `args`, waiting [`DEFAULT_TIMEOUT`].
    ///
    /// # Errors
    /// QEMU's refusal, a timeout, or a lost connection.
    pub async fn execute(&self, command: &str, args: Option<Value>) -> Result<Value, QmpError> {
        self.execute_with_timeout(command, args, DEFAULT_TIMEOUT)
            .await
    }

    /// Runs `command` with `args`, waiting at most `timeout`.
    ///
    /// # Errors
    /// QEMU's refusal, a timeout, or a lost connection.
    pub async fn execute_with_timeout(
        &self,
        command: &str,
        args: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        self.send(command, args, None, timeout).await
    }

    /// Runs `command` with `fd` passed alongside (SCM_RIGHTS), as `getfd`
    /// and `add-fd` expect.
    ///
    /// # Errors
    /// QEMU's refusal, a timeout, or a lost connection.
    pub async fn execute_with_fd(
        &self,
        command: &str,
        args: Option<Value>,
        fd: BorrowedFd<'_>,
    ) -> Result<Value, QmpError> {
        self.send(command, args, Some(fd), DEFAULT_TIMEOUT).await
    }

    async fn send(
        &self,
        command: &str,
        args: Option<Value>,
        fd: Option<BorrowedFd<'_>>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| QmpError::Disconnected("poisoned".into()))?
            .insert(id, tx);
        tracing::debug!(command, id, "QMP execute");
        {
            let mut w = self.writer.lock().await;
            match fd {
                None => w.write_all(line.as_bytes()).await?,
                Some(fd) => send_with_fd(&w, line.as_bytes(), fd).await?,
            }
        }
        let reply = tokio::time::timeout(timeout, rx).await;
        let reply = match reply {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(QmpError::Disconnected("the reader stopped".into())),
            Err(_) => {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&id);
                }
                Err(QmpError::Timeout {
                    command: command.to_string(),
                    timeout,
                })
            }
        };
        reply.map_err(|e| match e {
            QmpError::Command { class, desc, .. } => QmpError::Command {
                command: command.to_string(),
                class,
                desc,
            },
            other => other,
        })
    }

    /// Waits for the first event named `name` whose data passes `accept`,
    /// on `events` (subscribed before the command that causes it).
    ///
    /// # Errors
    /// None came within `timeout`, or the connection was lost.
    pub async fn wait_event(
        events: &mut broadcast::Receiver<QmpEvent>,
        name: &str,
        accept: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<QmpEvent, QmpError> {
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(ev) if ev.name == name && accept(&ev.data) => return Ok(ev),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(QmpError::Disconnected(format!(
                            "while waiting for event {name}"
                        )));
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| QmpError::Timeout {
                command: format!("(event {name})"),
                timeout,
            })?
    }
}

/// Writes `bytes` with `fd` attached as ancillary data.
async fn send_with_fd(
    w: &OwnedWriteHalf,
    bytes: &[u8],
    fd: BorrowedFd<'_>,
) -> Result<(), std::io::Error> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let stream: &UnixStream = w.as_ref();
    let raw = [fd.as_raw_fd()];
    let mut sent = 0;
    while sent < bytes.len() {
        stream.writable().await?;
        let rest = &bytes[sent..];
        let result = stream.try_io(tokio::io::Interest::WRITABLE, || {
            let iov = [std::io::IoSlice::new(rest)];
            // The fd goes with the first byte only.
            let cmsgs = if sent == 0 {
                vec![ControlMessage::ScmRights(&raw)]
            } else {
                Vec::new()
            };
            sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None)
                .map_err(std::io::Error::from)
        });
        match result {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
