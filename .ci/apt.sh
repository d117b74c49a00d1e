# apt-get for .ci/setup (sourced), waiting for another apt or dpkg to finish instead of failing
# at once: on a fresh machine unattended-upgrades or cloud-init often hold the locks for a while.
#
#   apt_get ARGS...    apt-get ARGS, non-interactive, as root (sudo when needed); waits up to
#                      $APT_LOCK_WAIT seconds for the dpkg locks (DPkg::Lock::Timeout).
#   apt_update         apt-get update, waiting as long for the package lists' lock: apt 2.6
#                      (Debian 12) applies DPkg::Lock::Timeout to the dpkg locks only, and
#                      `update` fails at once on /var/lib/apt/lists/lock, so it is retried
#                      while that is the error.
#
# APT_CONFIG (apt's own variable) is passed through: tests/ci_apt.rs points apt at a sandbox
# with it.

APT_LOCK_WAIT="${LQD_APT_LOCK_WAIT:-600}"

# The system's apt needs root: use sudo when we are not root and it exists (not for a sandbox of
# the caller's own, named by APT_CONFIG).
APT_SUDO=()
if [ "$(id -u)" -ne 0 ] && [ -z "${APT_CONFIG:-}" ] && command -v sudo >/dev/null 2>&1; then
    APT_SUDO=(sudo)
fi

apt_get() {
    "${APT_SUDO[@]}" env DEBIAN_FRONTEND=noninteractive ${APT_CONFIG:+"APT_CONFIG=$APT_CONFIG"} \
        apt-get -o DPkg::Lock::Timeout="$APT_LOCK_WAIT" "$@"
}

apt_update() {
    local start=$SECONDS out said=0
    while true; do
        if out="$(apt_get update 2>&1)"; then
            printf '%s\n' "$out"
            return 0
        fi
        if ! grep -q 'Could not get lock' <<<"$out" || [ $((SECONDS - start)) -ge "$APT_LOCK_WAIT" ]; then
            printf '%s\n' "$out" >&2
            return 1
        fi
        if [ "$said" -eq 0 ]; then
            echo "apt-get update: the package lists are locked by another apt; waiting up to ${APT_LOCK_WAIT}s" >&2
            said=1
        fi
        sleep 2
    done
}
