//! `.ci/setup`'s apt-get waits for another apt instead of failing at once (issue 17): its
//! wrappers (`.ci/apt.sh`) run the real apt-get while another process holds the real locks
//! (`fcntl`, as apt and dpkg take them), and succeed once they are released.
//!
//! apt runs in a sandbox of its own (`APT_CONFIG`: an empty status file, package lists and
//! sources in a temporary directory), so the test installs nothing, fetches nothing and leaves
//! the machine's package state alone; the locks it contends for are the sandbox's
//! `lock-frontend` and `lists/lock`, which apt takes exactly as it takes the system's.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the other "apt" holds a lock.
const HELD: Duration = Duration::from_secs(3);

/// An apt configuration pointing every state apt keeps into `dir`.
fn sandbox(dir: &Path) -> std::path::PathBuf {
    for sub in [
        "dpkg",
        "lists/partial",
        "cache/archives/partial",
        "sources.list.d",
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("dpkg/status"), "").unwrap();
    std::fs::write(dir.join("sources.list"), "").unwrap();
    let d = dir.display();
    let conf = dir.join("apt.conf");
    std::fs::write(
        &conf,
        format!(
            "Dir::State::status \"{d}/dpkg/status\";\nDir::State::Lists \"{d}/lists\";\n\
             Dir::Cache \"{d}/cache\";\nDir::Etc::SourceList \"{d}/sources.list\";\n\
             Dir::Etc::SourceParts \"{d}/sources.list.d\";\n"
        ),
    )
    .unwrap();
    conf
}

/// Another process holding `lock` as apt and dpkg do (`fcntl`, not `flock`) for [`HELD`];
/// returns once the lock is taken.
fn hold(lock: &Path) -> Child {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(
            "import fcntl, sys, time\n\
             f = open(sys.argv[1], 'w')\n\
             fcntl.lockf(f, fcntl.LOCK_EX)\n\
             print('locked', flush=True)\n\
             time.sleep(float(sys.argv[2]))\n",
        )
        .arg(lock)
        .arg(HELD.as_secs_f64().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (CI has it)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    child
}

/// Runs `call` (a function of `.ci/apt.sh` and its arguments) with apt in the sandbox `conf`;
/// its success and how long it took.
fn apt_sh(conf: &Path, call: &str) -> (bool, Duration, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/apt.sh");
    let started = Instant::now();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(". '{}' && {call}", script.display()))
        .env("APT_CONFIG", conf)
        .env("LQD_APT_LOCK_WAIT", "60")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), started.elapsed(), said)
}

#[test]
fn apt_get_waits_for_the_dpkg_lock_another_apt_holds() {
    let dir = tempfile::tempdir().unwrap();
    let conf = sandbox(dir.path());
    let (ok, _, said) = apt_sh(&conf, "apt_get install -y");
    assert!(ok, "the sandbox works: {said}");
    let mut other = hold(&dir.path().join("dpkg/lock-frontend"));
    let (ok, took, said) = apt_sh(&conf, "apt_get install -y");
    other.wait().unwrap();
    assert!(ok, "{said}");
    assert!(
        took >= HELD - Duration::from_millis(500),
        "did not wait: {took:?} {said}"
    );
}

#[test]
fn apt_update_waits_for_the_lists_lock_another_apt_holds() {
    let dir = tempfile::tempdir().unwrap();
    let conf = sandbox(dir.path());
    let (ok, _, said) = apt_sh(&conf, "apt_update");
    assert!(ok, "the sandbox works: {said}");
    let mut other = hold(&dir.path().join("lists/lock"));
    let (ok, took, said) = apt_sh(&conf, "apt_update");
    other.wait().unwrap();
    assert!(ok, "{said}");
    assert!(
        took >= HELD - Duration::from_millis(500),
        "did not wait: {took:?} {said}"
    );
    assert!(said.contains("waiting"), "{said}");
}
