//! Line-oriented clients of QEMU's Unix sockets (the command shell,
//! qemu-guest-agent and QMP all speak one message per line), where every
//! connect, write and read has a deadline.

use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Why a line could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The deadline passed first.
    Timeout,
    /// The other side closed the connection.
    Eof,
    /// Any other failure.
    Io(io::Error),
}

/// One connection to a socket, with the bytes read past the last line.
#[derive(Debug)]
pub(crate) struct LineConn {
    stream: UnixStream,
    buffer: Vec<u8>,
}

/// How long until `deadline`; `None` once it has passed.
fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
}

impl LineConn {
    /// Connects to the socket at `path`, retrying while it does not exist
    /// yet or nobody listens, until `deadline`.
    pub(crate) fn connect(path: &Path, deadline: Instant) -> io::Result<Self> {
        loop {
            match UnixStream::connect(path) {
                Ok(stream) => {
                    return Ok(Self {
                        stream,
                        buffer: Vec::new(),
                    });
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) && remaining(deadline).is_some() =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Writes all of `bytes` before `deadline`.
    pub(crate) fn send(&mut self, bytes: &[u8], deadline: Instant) -> io::Result<()> {
        let left = remaining(deadline).ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?;
        self.stream.set_write_timeout(Some(left))?;
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads the next line (without its `\n`) before `deadline`.
    pub(crate) fn read_line(&mut self, deadline: Instant) -> Result<Vec<u8>, ReadError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                return Ok(line);
            }
            let left = remaining(deadline).ok_or(ReadError::Timeout)?;
            self.stream
                .set_read_timeout(Some(left))
                .map_err(ReadError::Io)?;
            let mut chunk = [0_u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ReadError::Eof),
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    // The socket timeout may fire a little early: the
                    // deadline, checked above, decides.
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(ReadError::Io(err)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn lines_are_split_across_and_within_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().expect("accept");
            peer.write_all(b"one\ntw").expect("write");
            std::thread::sleep(Duration::from_millis(20));
            peer.write_all(b"o\nthree\n").expect("write");
            let mut got = Vec::new();
            peer.read_to_end(&mut got).expect("read");
            got
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conn = LineConn::connect(&path, deadline).expect("connect");
        conn.send(b"hello\n", deadline).expect("send");
        assert_eq!(conn.read_line(deadline).expect("line"), b"one");
        assert_eq!(conn.read_line(deadline).expect("line"), b"two");
        assert_eq!(conn.read_line(deadline).expect("line"), b"three");
        drop(conn);
        assert_eq!(server.join().expect("server"), b"hello\n");
    }

    #[test]
    fn a_silent_peer_times_out_and_a_closed_one_is_eof() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conn = LineConn::connect(&path, deadline).expect("connect");
        let (peer, _) = listener.accept().expect("accept");

        let started = Instant::now();
        let soon = started + Duration::from_millis(100);
        assert!(matches!(conn.read_line(soon), Err(ReadError::Timeout)));
        assert!(started.elapsed() >= Duration::from_millis(100));

        drop(peer);
        assert!(matches!(conn.read_line(deadline), Err(ReadError::Eof)));
    }

    #[test]
    fn connect_waits_for_the_socket_until_the_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("late.sock");
        let soon = Instant::now() + Duration::from_millis(100);
        let err = LineConn::connect(&path, soon).expect_err("nobody listens");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);

        let bind_path = path.clone();
        let server = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let listener = UnixListener::bind(bind_path).expect("bind");
            listener.accept().expect("accept").0
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        LineConn::connect(&path, deadline).expect("connects once the socket exists");
        drop(server.join().expect("server"));
    }
}
