//! rsync's exit codes (`errcode.h`, rsync.1 "EXIT VALUES"); operators' wrappers key on them.

/// An rsync-compatible process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ExitCode {
    Ok = 0,
    /// Syntax or usage error.
    Syntax = 1,
    /// Protocol incompatibility or a peer that broke the protocol.
    Protocol = 2,
    /// Errors selecting input/output files, dirs.
    FileSelect = 3,
    /// Requested action not supported.
    Unsupported = 4,
    /// Error starting client-server protocol (daemon refused, auth failed, unknown module).
    StartClient = 5,
    /// Error in socket I/O.
    SocketIo = 10,
    /// Error in file I/O.
    FileIo = 11,
    /// Error in rsync protocol data stream.
    StreamIo = 12,
    /// Killed by a signal.
    Signal = 20,
    /// Partial transfer due to error.
    Partial = 23,
    /// Partial transfer due to vanished source files.
    Vanished = 24,
    /// --max-delete limit stopped deletions.
    DelLimit = 25,
    /// Timeout in data send/receive.
    Timeout = 30,
    /// Timeout waiting for daemon connection.
    ConTimeout = 35,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        self as i32
    }

    /// Map a code received from the peer (MSG_ERROR_EXIT) to ours.
    pub fn from_peer(code: i32) -> ExitCode {
        match code {
            0 => ExitCode::Ok,
            1 => ExitCode::Syntax,
            2 => ExitCode::Protocol,
            3 => ExitCode::FileSelect,
            4 => ExitCode::Unsupported,
            5 => ExitCode::StartClient,
            10 => ExitCode::SocketIo,
            11 => ExitCode::FileIo,
            12 => ExitCode::StreamIo,
            20 => ExitCode::Signal,
            23 => ExitCode::Partial,
            24 => ExitCode::Vanished,
            25 => ExitCode::DelLimit,
            30 => ExitCode::Timeout,
            35 => ExitCode::ConTimeout,
            _ => ExitCode::Partial,
        }
    }
}

/// io_error bits (`rsync.h`).
pub const IOERR_GENERAL: i32 = 1;
pub const IOERR_VANISHED: i32 = 2;
pub const IOERR_DEL_LIMIT: i32 = 4;
pub const IOERR_VALID_MASK: i32 = 7;

/// `_exit_cleanup` precedence: GENERAL over VANISHED over DEL_LIMIT.
pub fn exit_for_io_error(io_error: i32) -> ExitCode {
    if io_error & IOERR_GENERAL != 0 {
        ExitCode::Partial
    } else if io_error & IOERR_VANISHED != 0 {
        ExitCode::Vanished
    } else if io_error & IOERR_DEL_LIMIT != 0 {
        ExitCode::DelLimit
    } else {
        ExitCode::Ok
    }
}
