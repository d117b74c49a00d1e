//! Telling the service manager how lqd is doing: systemd's notification protocol
//! (`sd_notify(3)`), for a `Type=notify` unit such as the packaged `lqd.service`.
//!
//! systemd names a datagram socket in `NOTIFY_SOCKET`: a path, or an abstract socket name
//! written with a leading `@`. lqd sends `READY=1` once its TCP and UDP ports listen, its
//! journal is open and its source runs, so `systemctl start lqd` returns when requestors can be
//! served and units ordered after lqd start then; `RELOADING=1` when a SIGHUP starts a reload
//! and `READY=1` again once it is done (taken or rejected); `STOPPING=1` when it begins to
//! stop. Each message is one datagram of newline-separated `KEY=VALUE` lines. Outside systemd
//! the variable is unset and nothing is sent.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::UnixDatagram;

/// The environment variable naming the service manager's socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (such as `"READY=1"`) to the socket in `NOTIFY_SOCKET`.
///
/// `Ok(false)` when the variable is unset or empty: not run by a service manager.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` to the notification socket `socket`: a path, or `@NAME` for an abstract
/// socket (Linux).
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let sender = UnixDatagram::unbound()?;
    let bytes = socket.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        send_abstract(&sender, name, state.as_bytes())?
    } else {
        sender.send_to(state.as_bytes(), socket)?
    };
    if sent == state.len() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "notification cut short: {sent} of {} octets sent",
            state.len()
        )))
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(sender: &UnixDatagram, name: &[u8], state: &[u8]) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sender.send_to_addr(state, &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract notification sockets exist on Linux only",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_socket_receives_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1\nSTATUS=serving").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_abstract_socket_receives_the_state() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("lqd-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(notify_to(dir.path().join("absent").as_os_str(), "READY=1").is_err());
    }
}
