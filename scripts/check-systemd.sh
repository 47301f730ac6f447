#!/usr/bin/env bash
# Check systemd/cliptag.service without starting it:
#   1. `systemd-analyze verify`: the unit must load with no warning at all about itself
#      (verify exits 0 even for an unknown key or an unparsable value, so its output is read);
#   2. `systemd-analyze security --offline`: the overall exposure must be <= 2.5.
# Needs no running systemd (CI, containers, a fresh Debian 12 chroot) and no built cliptag.
# As root on Debian it installs what is missing (systemd for systemd-analyze, procps for the
# /bin/kill that ExecReload= uses); otherwise it says what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

unit=systemd/cliptag.service
max_exposure=2.5               # systemd-analyze prints 0.0 (best) .. 10.0 (worst)
threshold=25                   # the same, in the tenths --threshold= takes
min_systemd=250                # first release with security --offline= and --threshold=

say() { echo "check-systemd: $*"; }
die() { echo "check-systemd: $*" >&2; exit 1; }
indent() { awk '{ print "    " $0 }'; }

[[ -f $unit ]] || die "$unit not found"

# ---- tools ----------------------------------------------------------------------------
need=()
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
[[ -x /bin/kill ]] || need+=(procps)
if [[ ${#need[@]} -gt 0 ]]; then
    missing=()
    if command -v dpkg-query >/dev/null 2>&1; then
        for p in "${need[@]}"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
        done
    else
        missing=("${need[@]}")
    fi
    if [[ ${#missing[@]} -gt 0 ]]; then
        if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
            die "missing packages: ${missing[*]}; run as root on Debian or install them"
        fi
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
fi
command -v systemd-analyze >/dev/null 2>&1 || die "systemd-analyze still not found"
[[ -r /proc/self/status ]] || die "/proc is not mounted (in a chroot: mount -t proc proc /proc)"

version=$(systemd-analyze --version | awk 'NR == 1 { print $2 }')
say "systemd-analyze $version"
[[ ${version%%[!0-9]*} -ge $min_systemd ]] ||
    die "systemd $min_systemd or newer needed for security --offline/--threshold (Debian 12 has 252)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---- 1. verify ------------------------------------------------------------------------
# verify refuses an ExecStart= whose binary does not exist, and on a build machine
# /usr/local/bin/cliptag usually does not. Then a copy is verified in which only that path
# is swapped for an existing stand-in (true(1)); line numbers stay the same, and messages
# are reported against systemd/cliptag.service. On an installed box the real file is used.
exec_path=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
[[ -n $exec_path ]] || die "$unit has no ExecStart="
checked=$work/cliptag.service
if [[ -x $exec_path ]]; then
    cp "$unit" "$checked"
else
    stand_in=$(command -v true)
    awk -v from="ExecStart=$exec_path" -v to="ExecStart=$stand_in" '
        index($0, from) == 1 { $0 = to substr($0, length(from) + 1) } { print }' \
        "$unit" >"$checked"
    changed=$(diff "$unit" "$checked" | grep -c '^>' || true)
    [[ $changed -eq 1 ]] || die "stand-in copy differs from $unit in $changed lines, expected 1"
    say "verify: $exec_path is not installed; using $stand_in as a stand-in for it"
fi

set +e
verify_out=$(systemd-analyze verify --man=no "$checked" 2>&1)
verify_rc=$?
set -e
verify_out=${verify_out//$checked/$unit}
bad=$(grep -F 'cliptag.service' <<<"$verify_out" || true)
other=$(grep -vF 'cliptag.service' <<<"$verify_out" | grep -v '^$' || true)
if [[ -n $other ]]; then
    say "verify: notes about other units (not failing):"
    indent <<<"$other"
fi
if [[ $verify_rc -ne 0 || -n $bad ]]; then
    [[ -n $bad ]] && indent <<<"$bad" >&2
    die "verify: $unit has problems (exit status $verify_rc)"
fi
say "verify: $unit OK"

# ---- 2. security ----------------------------------------------------------------------
# The exposure depends only on the sandboxing settings, so the same copy is scored.
set +e
security_out=$(systemd-analyze security --offline=true --threshold="$threshold" --no-pager \
    "$checked" 2>&1)
security_rc=$?
set -e
security_out=${security_out//$checked/$unit}
# What still counts against the unit (lines marked ✗), then the overall line.
grep '✗' <<<"$security_out" | indent || true
score_line=$(grep -m1 'Overall exposure level' <<<"$security_out" || true)
if [[ -z $score_line ]]; then
    indent <<<"$security_out" >&2
    die "security: no exposure score in the output"
fi
echo "$score_line"
score=$(sed -n 's/.*: \([0-9][0-9]*\.[0-9]*\).*/\1/p' <<<"$score_line")
[[ -n $score ]] || die "security: cannot read the score from: $score_line"
if awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s > m) }' || [[ $security_rc -ne 0 ]]; then
    die "security: exposure $score is above $max_exposure (exit status $security_rc)"
fi
say "security: exposure $score <= $max_exposure OK"
