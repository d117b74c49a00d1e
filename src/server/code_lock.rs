//! Keeps lqd's own code in memory.
//!
//! The kernel may drop a page of an executable's code that has not run for a while: under
//! memory pressure, or sooner where proactive reclaim runs (DAMON's `pageout` on many cloud
//! VMs drops file pages cold for a minute). The next time that code runs, its page is read
//! back from disk, in the event loop, and every live change waits as long. A catch-up storm
//! after minutes of quiet runs code that the quiet did not (issue 19: on such a VM the loop
//! stalled 116 ms at the reconnect while lqd took nine major faults; which pages they were is
//! not known, the journal's read-ahead came in the same change, D49). lqd's code and read-only
//! data are a few MiB: they are locked (`mlock`) at start, as latency-sensitive daemons do
//! (chronyd `-m`, keepalived). Without the privilege or the `RLIMIT_MEMLOCK` room for it, lqd
//! says so and runs as before.

use std::path::Path;

/// lqd's code and read-only data, locked in memory for as long as this lives.
pub struct CodeLock {
    _guards: Vec<region::LockGuard>,
    bytes: usize,
}

impl std::fmt::Debug for CodeLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeLock")
            .field("ranges", &self._guards.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl CodeLock {
    /// Octets locked.
    #[must_use]
    pub const fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Locks the mappings of the running executable (its code, read-only data and unwind
/// tables), as `/proc/self/maps` lists them. Either all of them are locked or none: an error
/// says why (no `/proc`, or `mlock` refused: `RLIMIT_MEMLOCK` too small without
/// `CAP_IPC_LOCK`).
pub fn lock_code() -> Result<CodeLock, String> {
    let exe = std::fs::read_link("/proc/self/exe")
        .map_err(|e| format!("cannot find lqd's executable: {e}"))?;
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| format!("cannot read /proc/self/maps: {e}"))?;
    let ranges = read_only_ranges(&maps, &exe);
    if ranges.is_empty() {
        return Err(format!(
            "/proc/self/maps lists no mapping of {}",
            exe.display()
        ));
    }
    let mut guards = Vec::with_capacity(ranges.len());
    let mut bytes = 0usize;
    for (start, len) in ranges {
        // A raw pointer only names the range for mlock(2); nothing is read through it.
        let guard = region::lock(start as *const u8, len).map_err(|e| {
            format!(
                "mlock of {len} octets of lqd's code refused ({e}); RLIMIT_MEMLOCK is {}",
                memlock_limit()
            )
        })?;
        guards.push(guard);
        bytes = bytes.saturating_add(len);
    }
    Ok(CodeLock {
        _guards: guards,
        bytes,
    })
}

/// The soft `RLIMIT_MEMLOCK`, for the error.
fn memlock_limit() -> String {
    match rlimit::Resource::MEMLOCK.get() {
        Ok((soft, _)) if soft == rlimit::INFINITY => "unlimited".to_owned(),
        Ok((soft, _)) => format!("{} KiB", soft / 1024),
        Err(e) => format!("unknown ({e})"),
    }
}

/// The (start, length) of each mapping of `exe` in a `/proc/PID/maps` text that is not
/// writable: code, read-only data, unwind tables. Writable data is left to the kernel (it is
/// anonymous memory once written).
fn read_only_ranges(maps: &str, exe: &Path) -> Vec<(usize, usize)> {
    let exe = exe.to_string_lossy();
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            // offset, device, inode, then the path (which may hold spaces).
            let path = fields.skip(3).collect::<Vec<_>>().join(" ");
            if path != exe || perms.as_bytes().get(1) == Some(&b'w') {
                return None;
            }
            let (lo, hi) = range.split_once('-')?;
            let lo = usize::from_str_radix(lo, 16).ok()?;
            let hi = usize::from_str_radix(hi, 16).ok()?;
            (hi > lo).then(|| (lo, hi - lo))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_executables_read_only_mappings_are_the_ones_locked() {
        let maps = "\
55d0c0000000-55d0c0100000 r--p 00000000 fd:01 123 /usr/sbin/lqd
55d0c0100000-55d0c0600000 r-xp 00100000 fd:01 123 /usr/sbin/lqd
55d0c0600000-55d0c0700000 r--p 00600000 fd:01 123 /usr/sbin/lqd
55d0c0700000-55d0c0710000 rw-p 00700000 fd:01 123 /usr/sbin/lqd
55d0c0710000-55d0c0800000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 r-xp 00000000 fd:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1000000000-7f1090000000 rw-s 00000000 fd:01 789 /var/lib/lqd/lqd-journal
7f2000000000-7f2000001000 r-xp 00000000 fd:01 124 /usr/sbin/lqd (deleted)
";
        let ranges = read_only_ranges(maps, Path::new("/usr/sbin/lqd"));
        assert_eq!(
            ranges,
            [
                (0x55d0_c000_0000, 0x10_0000),
                (0x55d0_c010_0000, 0x50_0000),
                (0x55d0_c060_0000, 0x10_0000),
            ]
        );
        assert!(read_only_ranges(maps, Path::new("/usr/sbin/other")).is_empty());
    }

    #[test]
    fn this_process_code_is_locked_or_the_refusal_says_why() {
        match lock_code() {
            Ok(lock) => assert!(lock.bytes() > 64 * 1024, "{} octets", lock.bytes()),
            // A test binary is tens of MiB: an unprivileged run may not have the room.
            Err(e) => assert!(e.contains("RLIMIT_MEMLOCK"), "{e}"),
        }
    }
}
