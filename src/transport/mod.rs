//! The thin async layer: a TCP connection to a daemon, split so that writing
//! never waits on reading (a writer task drains an unbounded queue), with
//! connect and idle timeouts. All protocol logic lives in `proto`.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::exit::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("failed to connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("timed out connecting to {0}")]
    ConnectTimeout(String),
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("timeout: no data from the server for {0} seconds")]
    Idle(u64),
    #[error("timed out after {0} seconds waiting for the server to answer")]
    HandshakeTimeout(u64),
    #[error("failed to start remote shell {cmd:?}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
}

impl TransportError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            TransportError::Connect { .. } | TransportError::Io(_) => ExitCode::SocketIo,
            TransportError::Spawn { .. } => ExitCode::Unsupported,
            TransportError::ConnectTimeout(_) | TransportError::HandshakeTimeout(_) => ExitCode::ConTimeout,
            TransportError::Idle(_) => ExitCode::Timeout,
        }
    }
}

/// Which timeout bounds a read.
#[derive(Clone, Copy)]
enum Deadline {
    Handshake(Duration),
    Idle(Duration),
}

impl Deadline {
    fn error(self) -> TransportError {
        match self {
            Deadline::Handshake(h) => TransportError::HandshakeTimeout(h.as_secs()),
            Deadline::Idle(t) => TransportError::Idle(t.as_secs()),
        }
    }
}

type BoxRead = Box<dyn AsyncRead + Unpin + Send>;
type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;

/// An open connection: a read half, and a queue to a writer task. Either a TCP
/// socket to a daemon or the pipes of a remote-shell child.
pub struct Connection {
    rd: BoxRead,
    child: Option<tokio::process::Child>,
    tx: Option<mpsc::UnboundedSender<Vec<u8>>>,
    writer: Option<JoinHandle<std::io::Result<()>>>,
    idle: Option<Duration>,
    /// Deadline for the server's first answer (`--contimeout` covers the
    /// greeting too, so a peer that accepts and stays silent cannot hang us).
    handshake: Option<Duration>,
    /// When bytes last arrived: the idle deadline counts from here, not from
    /// each read call (the loop re-enters `read` on every keep-alive tick).
    last_rx: tokio::time::Instant,
    /// Bytes read and written, for statistics.
    pub bytes_read: u64,
    pub bytes_written: std::sync::Arc<std::sync::atomic::AtomicU64>,
    record: Option<Recorder>,
    /// A duplicate of the TCP socket's descriptor, when this is one: see
    /// [`quick_ack`].
    tcp_fd: Option<std::os::fd::OwnedFd>,
}

/// Acknowledge what was just read at once instead of after the delayed-ACK
/// timer (40 ms on Linux). rsyncd writes a phase's last few bytes as
/// separate small segments with Nagle's algorithm on, so each one waits for
/// the ACK of the one before; between phases the client has nothing to send
/// that could carry that ACK, and every exchange of the protocol's tail
/// (checksum seed, end of phases, statistics) cost a delayed-ACK period.
/// Linux clears quick-ack mode by itself, so it is set again after each read.
/// Errors are ignored: this is only a latency hint.
fn quick_ack(fd: BorrowedFd<'_>) {
    let _ = rustix::net::sockopt::set_tcp_quickack(fd, true);
}

/// Records both directions of a session to files (for `protocol-fixtures/`).
struct Recorder {
    from_server: std::fs::File,
}

impl Connection {
    /// Connect to `host:port` with an optional connect timeout.
    pub async fn connect(host: &str, port: u16, contimeout: Option<Duration>) -> Result<Self, TransportError> {
        let addr = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let fut = TcpStream::connect(addr.clone());
        let stream = match contimeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| TransportError::ConnectTimeout(addr.clone()))?,
            None => fut.await,
        }
        .map_err(|source| TransportError::Connect { addr: addr.clone(), source })?;
        stream.set_nodelay(true).ok();
        Ok(Self::from_stream(stream))
    }

    pub fn from_stream(stream: TcpStream) -> Self {
        // A failed dup only loses the latency hint.
        let fd = stream.as_fd().try_clone_to_owned().ok();
        let (rd, wr) = stream.into_split();
        let mut c = Self::from_halves(Box::new(rd), Box::new(wr));
        c.tcp_fd = fd;
        c
    }

    /// Start `argv` (e.g. `ssh host rsync --server --sender …`) and talk over its
    /// stdin/stdout; its stderr goes to ours, as rsync does.
    pub fn spawn(argv: &[std::ffi::OsString]) -> Result<Self, TransportError> {
        let show = argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");
        let (prog, rest) = argv
            .split_first()
            .ok_or_else(|| TransportError::Spawn { cmd: show.clone(), source: std::io::Error::other("empty command") })?;
        let mut child = tokio::process::Command::new(prog)
            .args(rest)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| TransportError::Spawn { cmd: show.clone(), source })?;
        let (Some(out), Some(inp)) = (child.stdout.take(), child.stdin.take()) else {
            return Err(TransportError::Spawn { cmd: show, source: std::io::Error::other("no pipes") });
        };
        let mut c = Self::from_halves(Box::new(out), Box::new(inp));
        c.child = Some(child);
        Ok(c)
    }

    fn from_halves(rd: BoxRead, mut wr: BoxWrite) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let w2 = written.clone();
        let record = std::env::var_os("RMIRROR_RECORD").and_then(|dir| {
            let dir = std::path::PathBuf::from(dir);
            std::fs::create_dir_all(&dir).ok()?;
            let to = std::fs::File::create(dir.join("client.bin")).ok()?;
            let from = std::fs::File::create(dir.join("server.bin")).ok()?;
            Some((to, from))
        });
        let (rec_to, record) = match record {
            Some((to, from)) => (Some(to), Some(Recorder { from_server: from })),
            None => (None, None),
        };
        let writer = tokio::spawn(async move {
            let mut rec_to = rec_to;
            while let Some(buf) = rx.recv().await {
                if let Some(f) = rec_to.as_mut() {
                    use std::io::Write;
                    let _ = f.write_all(&buf);
                }
                wr.write_all(&buf).await?;
                w2.fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            wr.shutdown().await.ok();
            Ok(())
        });
        Connection {
            rd,
            child: None,
            tx: Some(tx),
            writer: Some(writer),
            idle: None,
            handshake: None,
            last_rx: tokio::time::Instant::now(),
            bytes_read: 0,
            bytes_written: written,
            record,
            tcp_fd: None,
        }
    }

    /// Fail reads that see no data for this long (`--timeout`).
    pub fn set_idle_timeout(&mut self, t: Option<Duration>) {
        self.idle = t;
    }

    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle
    }

    /// Until [`Connection::handshake_done`], reads time out after `t` at most.
    pub fn set_handshake_timeout(&mut self, t: Option<Duration>) {
        self.handshake = t;
    }

    pub fn handshake_done(&mut self) {
        self.handshake = None;
    }

    /// Restart the idle clock (after local work during which the peer was
    /// legitimately waiting for us).
    pub fn touch(&mut self) {
        self.last_rx = tokio::time::Instant::now();
    }

    /// Queue bytes for sending.
    pub fn send(&self, buf: Vec<u8>) {
        if buf.is_empty() {
            return;
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(buf);
        }
    }

    /// Read some bytes (0 = EOF), honouring the idle timeout.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        let n = match self.deadline() {
            Some((at, why)) => tokio::time::timeout_at(at, self.rd.read(buf)).await.map_err(|_| why.error())??,
            None => self.rd.read(buf).await?,
        };
        self.received(&buf[..n]);
        Ok(n)
    }

    /// Read some bytes (0 = EOF) into the spare capacity of `buf`, appending
    /// to what it holds, with the same timeouts as [`Connection::read`]. The
    /// bytes go straight from the kernel into `buf` (e.g. a session's
    /// `input_buffer`), with no intermediate copy and no zeroing.
    pub async fn read_buf(&mut self, buf: &mut bytes::BytesMut) -> Result<usize, TransportError> {
        let before = buf.len();
        let n = match self.deadline() {
            Some((at, why)) => {
                tokio::time::timeout_at(at, self.rd.read_buf(buf)).await.map_err(|_| why.error())??
            }
            None => self.rd.read_buf(buf).await?,
        };
        self.received(&buf[before..before + n]);
        Ok(n)
    }

    /// When the current read must give up, and what error that is.
    fn deadline(&self) -> Option<(tokio::time::Instant, Deadline)> {
        match (self.handshake, self.idle) {
            (Some(h), idle) if idle.is_none_or(|i| h <= i) => Some((self.last_rx + h, Deadline::Handshake(h))),
            (_, Some(t)) => Some((self.last_rx + t, Deadline::Idle(t))),
            (_, None) => None,
        }
    }

    /// Bookkeeping for bytes that just arrived.
    fn received(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        if n > 0 {
            self.last_rx = tokio::time::Instant::now();
            if let Some(fd) = &self.tcp_fd {
                quick_ack(fd.as_fd());
            }
        }
        self.bytes_read += n as u64;
        if let Some(r) = self.record.as_mut() {
            use std::io::Write;
            let _ = r.from_server.write_all(bytes);
        }
    }

    /// Flush queued output and close our side. A peer that stopped reading
    /// cannot hold us here: after `grace` the writer is abandoned.
    pub async fn finish(mut self) -> Result<(), TransportError> {
        drop(self.tx.take());
        let grace = self.idle.unwrap_or(Duration::from_secs(30)).min(Duration::from_secs(30));
        if let Some(mut w) = self.writer.take() {
            match tokio::time::timeout(grace, &mut w).await {
                Ok(Ok(r)) => r?,
                Ok(Err(e)) => return Err(TransportError::Io(std::io::Error::other(e))),
                Err(_) => {
                    w.abort();
                    return Err(TransportError::Idle(grace.as_secs()));
                }
            }
        }
        if let Some(mut child) = self.child.take() {
            // The remote side exits after the goodbye; don't leave a zombie.
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
        Ok(())
    }
}
