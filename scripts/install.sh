#!/usr/bin/env bash
# Install cliptag as a systemd service (run as root on the target box, from a checkout):
#
#   scripts/install.sh [--model DIR [--model-name NAME]] [BINARY]
#
#   BINARY             the cliptag binary to install (default: target/release/cliptag,
#                      built with `cargo build --release --locked` when it is missing)
#   --model DIR        copy this CLIP model directory to /var/lib/cliptag/models/NAME
#   --model-name NAME  NAME for the copy (default: DIR's own name; give one for a Hugging
#                      Face cache snapshot, whose directory is named after a commit hash)
#
# Installs /usr/local/bin/cliptag, /etc/systemd/system/cliptag.service, the `cliptag` system
# user, /etc/cliptag/cliptag.toml and /etc/cliptag/labels.txt (each only if absent: a config
# or labels file already there is never touched), /var/lib/cliptag, and loads videodev at
# boot when it is a module. Then `systemctl daemon-reload`. Run it again to upgrade.
#
# DESTDIR=/some/root puts every file under that root instead (packaging, tests): no root
# needed, no user created, no ownership changed, no systemctl. systemctl is also skipped
# when systemd is not running (containers, chroots).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
destdir=${DESTDIR:-}
destdir=${destdir%/}
user=cliptag

say() { echo "install.sh: $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }
usage() { sed -n '2,11s/^# \{0,1\}//p' "$0"; }

bin=
model=
model_name=
while [[ $# -gt 0 ]]; do
    case $1 in
        --model)
            [[ $# -ge 2 ]] || die "--model needs a directory"
            model=$2
            shift 2
            ;;
        --model=*) model=${1#--model=}; shift ;;
        --model-name)
            [[ $# -ge 2 ]] || die "--model-name needs a name"
            model_name=$2
            shift 2
            ;;
        --model-name=*) model_name=${1#--model-name=}; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option $1" ;;
        *)
            [[ -z $bin ]] || die "one binary only (got $bin and $1)"
            bin=$1
            shift
            ;;
    esac
done

if [[ -z $destdir && $(id -u) -ne 0 ]]; then
    die "run as root (or set DESTDIR=/some/root to install into a staging tree)"
fi
# Ownership and accounts only on the real system, as root.
real_system=false
[[ -z $destdir && $(id -u) -eq 0 ]] && real_system=true
systemd_running=false
[[ -z $destdir && -d /run/systemd/system ]] && systemd_running=true

# ---- the binary -------------------------------------------------------------------------
if [[ -z $bin ]]; then
    bin=$repo/target/release/cliptag
    if [[ ! -x $bin ]]; then
        command -v cargo >/dev/null 2>&1 ||
            die "$bin not found and cargo is not installed; build it, or pass the binary's path"
        say "$bin not found; building it (cargo build --release --locked)"
        (cd "$repo" && cargo build --release --locked --bin cliptag)
    fi
fi
[[ -f $bin && -x $bin ]] || die "binary $bin not found or not executable"

if [[ -n $model ]]; then
    [[ -d $model ]] || die "model directory $model not found"
    model=$(cd "$model" && pwd -P)
    [[ -n $model_name ]] || model_name=$(basename "$model")
    [[ $model_name =~ ^[A-Za-z0-9][A-Za-z0-9._@+-]*$ ]] ||
        die "model name '$model_name' must be letters, digits and . _ @ + - (use --model-name)"
    model_path=/var/lib/cliptag/models/$model_name   # as the service sees it
elif [[ -n $model_name ]]; then
    die "--model-name needs --model DIR"
fi

# ---- the user -----------------------------------------------------------------------------
# A static system user with no home and no shell; the unit adds the video group itself.
if $real_system; then
    if ! getent passwd "$user" >/dev/null; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin --comment "cliptag video tagging daemon" "$user"
        say "created system user $user"
    fi
else
    say "DESTDIR set or not root: not creating user $user, not changing ownership"
fi

# install(1) with owner/group only on the real system.
owned() { # owned USER GROUP -> the -o/-g flags, or none
    if $real_system; then echo "-o $1 -g $2"; fi
}

# ---- files -------------------------------------------------------------------------------
# install(1) writes a new file and renames it over the old one, so a running daemon keeps
# its old binary until `systemctl restart cliptag`.
install -D -m 0755 "$bin" "$destdir/usr/local/bin/cliptag"
say "installed $destdir/usr/local/bin/cliptag"

# The unit is ours and is replaced on upgrade; local changes go in a drop-in
# (`systemctl edit cliptag` -> /etc/systemd/system/cliptag.service.d/override.conf).
install -D -m 0644 "$repo/systemd/cliptag.service" "$destdir/etc/systemd/system/cliptag.service"
say "installed $destdir/etc/systemd/system/cliptag.service"

# /etc/cliptag: root-owned and readable; the config inside is not (camera passwords).
# shellcheck disable=SC2046
install -d -m 0755 $(owned root root) "$destdir/etc/cliptag"
config=$destdir/etc/cliptag/cliptag.toml
if [[ -e $config ]]; then
    say "kept existing $config"
    if [[ -n $model ]] && ! grep -q "^dir *= *\"$model_path\"" "$config"; then
        say "note: point [model] dir in $config at $model_path"
    fi
else
    # shellcheck disable=SC2046
    install -m 0640 $(owned root "$user") "$repo/systemd/cliptag.toml" "$config"
    if [[ -n $model ]]; then
        sed -i "s|^dir = \"/var/lib/cliptag/models/[^\"]*\"|dir = \"$model_path\"|" "$config"
    fi
    if $real_system; then
        say "installed $config (root:$user 0640: it holds camera passwords)"
    else
        say "installed $config (0640; on the real system it is root:$user)"
    fi
fi
labels=$destdir/etc/cliptag/labels.txt
if [[ -e $labels ]]; then
    say "kept existing $labels"
else
    # shellcheck disable=SC2046
    install -m 0644 $(owned root root) "$repo/examples/labels.txt" "$labels"
    say "installed $labels"
fi

# /var/lib/cliptag: systemd creates it too (StateDirectory=), with this owner and mode.
# Owning the top directory correctly also stops systemd from chown-ing the tree below,
# so models stay root-owned and read-only to the daemon.
state=$destdir/var/lib/cliptag
# shellcheck disable=SC2046
install -d -m 0750 $(owned "$user" "$user") "$state"
if [[ -n $model ]]; then
    # shellcheck disable=SC2046
    install -d -m 0755 $(owned root root) "$state/models"
    target=$state/models/$model_name
    if [[ -d $target ]] && diff -rq "$model" "$target" >/dev/null 2>&1; then
        say "model $target already up to date"
    else
        # -L: Hugging Face cache snapshots are symlinks into blobs/ (often under /root or
        # /home, which the service cannot see); copy the files themselves.
        tmp=$state/models/.$model_name.new
        rm -rf "$tmp"
        cp -RL "$model" "$tmp"
        chmod -R u=rwX,go=rX "$tmp"
        if $real_system; then chown -R root:root "$tmp"; fi
        if [[ -d $target ]]; then
            say "replacing $target (a database keeps one model's embeddings: a different" \
                "model needs \`cliptag run --new-model-generation\` once)"
            rm -rf "$target"
        fi
        mv "$tmp" "$target"
        say "copied model to $target ($(du -sh "$target" | cut -f1))"
    fi
fi

# ---- videodev at boot -------------------------------------------------------------------------
# DeviceAllow=char-video4linux is resolved from /proc/devices when the unit starts: if the
# videodev module is not loaded by then (no camera plugged in at boot), V4L2 cameras are
# refused until the next restart. Load it early, where it is a module on this kernel.
modules_conf=$destdir/etc/modules-load.d/cliptag.conf
videodev_file=$(modinfo -n videodev 2>/dev/null || true)
if [[ -e $modules_conf ]]; then
    say "kept existing $modules_conf"
elif [[ -n $videodev_file && $videodev_file != "(builtin)" ]]; then
    mkdir -p "$(dirname "$modules_conf")"
    cat >"$modules_conf" <<'EOF'
# Installed by cliptag's scripts/install.sh: cliptag.service allows V4L2 devices by major
# (DeviceAllow=char-video4linux), which systemd can only look up once videodev is loaded.
videodev
EOF
    say "installed $modules_conf"
    if $systemd_running; then modprobe videodev || true; fi
else
    say "videodev is built in or not available on this kernel; no modules-load.d entry needed"
fi

# ---- systemd ----------------------------------------------------------------------------------
if $systemd_running; then
    systemctl daemon-reload
    say "systemctl daemon-reload done"
else
    say "skipping systemctl (DESTDIR set or systemd not running)"
fi

active=false
if $systemd_running && systemctl is-active --quiet cliptag; then active=true; fi

cat <<EOF

Next steps:
  1. Edit /etc/cliptag/cliptag.toml: add your cameras ([[source]]) and check [model] dir
     (\`cliptag model check --model DIR\`); edit /etc/cliptag/labels.txt.
EOF
if $active; then
    cat <<EOF
  2. cliptag is running the old binary: systemctl restart cliptag
EOF
else
    cat <<EOF
  2. Start it now and at every boot: systemctl enable --now cliptag
EOF
fi
cat <<EOF
  3. Follow the log:        journalctl -u cliptag -f
  4. Sources' state:        cliptag status
     What was seen:         cliptag query --top --since today
  5. After editing labels:  systemctl reload cliptag   (other changes: systemctl restart cliptag)
EOF
