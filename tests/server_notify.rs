//! lqd under a `Type=notify` service manager, as the packaged `lqd.service` runs it: lqd
//! sends READY=1 on `NOTIFY_SOCKET` only once its port answers and its journal is open (so
//! `systemctl start lqd` returning means requestors can be served), RELOADING=1 then READY=1
//! around a reload on SIGHUP (`systemctl reload lqd`), and STOPPING=1 on SIGTERM.

#[path = "common/lqd.rs"]
mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::{by_link, link, read_answers, spawn_with_source};

/// The next notification, as text.
fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 1024];
    let n = socket.recv(&mut buf).expect("a notification within 20 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_once_serving_and_stopping_on_sigterm() {
    let manager = tempfile::tempdir().unwrap();
    let path = manager.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut lqd = spawn_with_source(
        "notify",
        &["--source", "demo"],
        "[demo]\nclients = 200\nlinks = 2\nchanges_per_sec = 1\n",
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    );

    let ready = next(&socket);
    let mut lines = ready.lines();
    assert_eq!(lines.next(), Some("READY=1"), "{ready}");
    let status = lines.next().unwrap_or_default();
    assert_eq!(
        status,
        format!("STATUS=serving on {}", lqd.addr),
        "{ready}\n{}",
        lqd.log()
    );
    // At READY=1, with no wait: the journal exists and the port answers a Bulk query.
    assert!(lqd.dir.join("lqd-journal").is_file(), "{}", lqd.log());
    let served: SocketAddr = lqd.addr;
    let mut s = std::net::TcpStream::connect(served).expect("lqd listens at READY=1");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&by_link(7, link(1))).unwrap();
    let answers = read_answers(&mut s, &[7]);
    assert!(!answers.is_empty(), "{}", lqd.log());

    // A reload: RELOADING=1 when the SIGHUP is taken, READY=1 once it is done, both for a
    // configuration taken and for one rejected (the running settings stay, lqd serves on).
    let hup = || {
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &lqd.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    let config = lqd.dir.join("lqd.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("max_connections = 500\n{good}")).unwrap();
    hup();
    let reloading = next(&socket);
    assert!(reloading.starts_with("RELOADING=1\n"), "{reloading}");
    assert_eq!(
        next(&socket),
        "READY=1\nSTATUS=configuration reloaded",
        "{}",
        lqd.log()
    );
    std::fs::write(&config, format!("max_connectoins = 500\n{good}")).unwrap();
    hup();
    let reloading = next(&socket);
    assert!(reloading.starts_with("RELOADING=1\n"), "{reloading}");
    assert_eq!(
        next(&socket),
        "READY=1\nSTATUS=configuration rejected; the running settings stay",
        "{}",
        lqd.log()
    );
    let mut s = std::net::TcpStream::connect(served).expect("lqd serves after the reloads");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&by_link(8, link(1))).unwrap();
    assert!(!read_answers(&mut s, &[8]).is_empty(), "{}", lqd.log());

    let status = lqd.sigterm();
    assert_eq!(next(&socket), "STOPPING=1", "{}", lqd.log());
    assert!(status.success(), "{status:?}\n{}", lqd.log());
}
