#!/usr/bin/env bash
# Ferry benchmark: how long `ferry send` takes to upload three workloads over
# loopback to a local `ferry-server`, next to the plainest possible copy
# (OpenBSD nc, with tar for folders) of the same bytes onto the same disk.
#
#   bench/run.sh            full run: 1 GiB file, 100 x 10 MiB, 10,000 x 4 KiB;
#                           5 timed runs per side (about 2 minutes on 2 cores)
#   bench/run.sh --quick    256 MiB, 20 x 10 MiB, 2,000 x 4 KiB; 3 runs (~30 s)
#
# Reading the output: the table gives the median wall-clock seconds of each
# side, their ratio (ferry/baseline: 1.0 means as fast as nc, 2.0 twice as
# slow) and ferry's throughput. Ferry's time ends when every file has been
# acked, which the server does only once the file and its name are durably
# on disk (fsync, or one syncfs for a group of small files);
# the baseline ends when the receiving nc/tar has exited, with data possibly
# still in the page cache. The raw TCP and disk+fsync lines bound what any
# copy can reach on this machine; the file-creation line shows what the disk
# allows for the small files. Then come the client's and server's CPU
# seconds per GiB and the server's peak RSS while 72 clients upload at once.
#
# Every run is verified (file count and bytes; full content on each
# workload's first run); the script exits non-zero if any run fails
# verification. Timings never fail the script: it is a report, not a test.
#
# --fs picks the file system the workloads live on:
#   disk   (default) the scratch folder as it is, on the disk you care about;
#   ext4   a fresh ext4 with a journal, in a loop-mounted image on that disk:
#          repeatable, whatever the host file system has been through;
#   tmpfs  memory only: what is left is Ferry's own per-file and per-byte
#          cost, with no disk in the way.
# ext4 and tmpfs need root (mount).
#
# Environment: FERRY_BENCH_DIR picks where the scratch folder goes (default
# /tmp).

set -Eeuo pipefail
export LC_ALL=C # EPOCHREALTIME and printf must use '.' as the decimal point

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")

QUICK=0
FS=disk
for arg in "$@"; do
    case $arg in
    --quick) QUICK=1 ;;
    --fs=disk | --fs=ext4 | --fs=tmpfs) FS=${arg#--fs=} ;;
    -h | --help)
        sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *)
        echo "usage: bench/run.sh [--quick] [--fs=disk|ext4|tmpfs]" >&2
        exit 2
        ;;
    esac
done

if ((QUICK)); then
    RUNS=3 BIG_MIB=256 MID_COUNT=20 SMALL_COUNT=2000 CEILING_MIB=512
    RESULTS=$BENCH_DIR/results/quick.md # never overwrites the full numbers
else
    RUNS=5 BIG_MIB=1024 MID_COUNT=100 SMALL_COUNT=10000 CEILING_MIB=2048
    RESULTS=$BENCH_DIR/results/latest.md
fi
# Full runs on another file system get a results file of their own.
if ((!QUICK)) && [[ $FS != disk ]]; then
    RESULTS=$BENCH_DIR/results/latest-$FS.md
fi
MID_MIB=10
SMALL_BYTES=4096
FOLDERS=100
# The memory check keeps its size in --quick: the target is stated for 72.
CROWD=72 CROWD_MIB=20 CROWD_RATE=20M
RSS_TARGET_MIB=64

FAILURES=0
BG_PIDS=()         # everything started in the background, for the trap
declare -A TIMES=() # "ferry:big" -> "1.234 1.301 ..." (verified runs only)
declare -A SRC=() LABEL=() BYTES=() FILES=()
WORKLOADS=(big mid small)

say() { printf '== %s\n' "$*" >&2; }
fail() {
    printf '!! FAILED: %s\n' "$*" >&2
    FAILURES=$((FAILURES + 1))
}
die() {
    printf '!! %s\n' "$*" >&2
    exit 1
}
now() { printf '%s' "$EPOCHREALTIME"; }
seconds_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

cleanup() {
    local pid
    for pid in "${BG_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [[ -n ${SCRATCH:-} && -d $SCRATCH ]]; then
        if mountpoint -q "$SCRATCH"; then
            umount "$SCRATCH" || umount -l "$SCRATCH" || true
        fi
        rm -rf "$SCRATCH"
    fi
    if [[ -n ${IMAGE:-} ]]; then
        rm -f "$IMAGE"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. tools and binaries -------------------------------------------------

install_tools() {
    local need=()
    # The baseline relies on OpenBSD nc: -N (shut down the write side at EOF)
    # and -l without -p. Other netcats differ.
    nc -h 2>&1 | grep -q OpenBSD || need+=(netcat-openbsd)
    [[ -x /usr/bin/time ]] || need+=(time)
    ((${#need[@]})) || return 0
    say "installing ${need[*]}"
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
}

build_ferry() {
    say "building ferry (cargo build --release)"
    (cd "$REPO" && cargo build --release -q -p ferry-server -p ferry-client)
    local target=${CARGO_TARGET_DIR:-$REPO/target}/release
    # Run private copies: a rebuild in the shared tree during the benchmark
    # must not swap the binaries between runs.
    mkdir -p "$SCRATCH/bin"
    cp "$target/ferry" "$target/ferry-server" "$SCRATCH/bin/"
    FERRY=$SCRATCH/bin/ferry
    SERVER=$SCRATCH/bin/ferry-server
}

# --- 2. workloads ------------------------------------------------------------

make_scratch() {
    local parent=${FERRY_BENCH_DIR:-/tmp}
    mkdir -p "$parent"
    SCRATCH=$(mktemp -d "$parent/ferry-bench.XXXXXX")
    case $FS in
    tmpfs)
        mount -t tmpfs -o size=8g tmpfs "$SCRATCH" || die "cannot mount a tmpfs (needs root)"
        ;;
    ext4)
        command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 is missing (e2fsprogs)"
        IMAGE=$(mktemp "$parent/ferry-bench-ext4.XXXXXX")
        truncate -s 16G "$IMAGE"
        mkfs.ext4 -q -F "$IMAGE"
        mount -o loop "$IMAGE" "$SCRATCH" || die "cannot mount an ext4 image (needs root)"
        ;;
    esac
    DEST=$SCRATCH/dst # receiving side, same disk as the sources
    LOGS=$SCRATCH/logs
    mkdir -p "$SCRATCH/src" "$LOGS"
}

# Counts and sizes a file or tree as "FILES BYTES".
tree_stats() {
    find "$1" -type f -printf '%s\n' | awk '{ n++; s += $1 } END { printf "%d %d\n", n, s }'
}

make_workloads() {
    local src=$SCRATCH/src
    say "creating workloads in $src"
    # Random bytes, so nothing along the way can compress them. Generated
    # once; the later workloads are cut from it while it is in the page cache.
    head -c "${BIG_MIB}M" /dev/urandom >"$src/big.bin"

    mkdir "$src/files-10M"
    head -c "$((MID_COUNT * MID_MIB))M" "$src/big.bin" |
        split -b "${MID_MIB}M" -d -a 3 --additional-suffix=.bin - "$src/files-10M/f"

    mkdir "$src/files-4K"
    local per=$((SMALL_COUNT / FOLDERS)) k
    for ((k = 0; k < FOLDERS; k++)); do
        mkdir "$src/files-4K/d$(printf %03d "$k")"
        dd if="$src/big.bin" bs="$SMALL_BYTES" skip="$((k * per))" count="$per" status=none |
            split -b "$SMALL_BYTES" -d -a 4 - "$src/files-4K/d$(printf %03d "$k")/f"
    done

    SRC[big]=$src/big.bin
    SRC[mid]=$src/files-10M
    SRC[small]=$src/files-4K
    LABEL[big]="1 x $(size_label "$BIG_MIB") file"
    LABEL[mid]="$MID_COUNT x $MID_MIB MiB files"
    LABEL[small]="$(thousands "$SMALL_COUNT") x 4 KiB files in $FOLDERS folders"
    local w stats
    for w in "${WORKLOADS[@]}"; do
        stats=$(tree_stats "${SRC[$w]}")
        FILES[$w]=${stats% *}
        BYTES[$w]=${stats#* }
    done
    [[ ${FILES[small]} == "$SMALL_COUNT" ]] || die "made ${FILES[small]} small files, wanted $SMALL_COUNT"
}

thousands() { sed ':a; s/\B[0-9]\{3\}\>/,&/; ta' <<<"$1"; }

size_label() { if (($1 >= 1024 && $1 % 1024 == 0)); then echo "$(($1 / 1024)) GiB"; else echo "$1 MiB"; fi; }

# Reads workload $1 into the page cache just before a timed run, so both
# sides start from the same place: on a host that reclaims memory left
# untouched for a few seconds (see bench/README.md), the source would
# otherwise be cached for one run and read from disk for the next.
warm_source() {
    find "${SRC[$1]}" -type f -exec cat {} + >/dev/null
}

fresh_dest() {
    rm -rf "$DEST"
    mkdir -p "$DEST"
}

# Clears the destination after a run of workload $1. One with thousands of
# files is moved aside and deleted at exit instead: on ext4 without a
# journal, creating a file scans past the inodes freed in the last ~30 s,
# so deleting 10,000 files just before a run bills that run (twice as slow
# here). Big files are deleted at once to keep the disk footprint small.
RETIRED=0
retire_dest() {
    if ((FILES[$1] > 1000)); then
        RETIRED=$((RETIRED + 1))
        mkdir -p "$SCRATCH/retired"
        mv "$DEST" "$SCRATCH/retired/$RETIRED"
    else
        rm -rf "$DEST"
    fi
}

# --- processes -----------------------------------------------------------------

# Starts ferry-server on a free port into $1; sets SERVER_PID and SERVER_ADDR.
start_server() {
    local out=$LOGS/server.out
    : >"$out"
    RUST_LOG=warn "$SERVER" --listen 127.0.0.1:0 --dir "$1" >"$out" 2>>"$LOGS/server.err" &
    SERVER_PID=$!
    BG_PIDS+=("$SERVER_PID")
    local i
    for ((i = 0; i < 1000; i++)); do
        if [[ $(head -n 1 "$out") =~ ^listening\ on\ (.+)$ ]]; then
            SERVER_ADDR=${BASH_REMATCH[1]}
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.01
    done
    die "ferry-server did not start: $(tail -n 20 "$LOGS/server.err")"
}

# SIGTERM is the graceful stop; anything but exit 0 is a failure.
stop_server() {
    kill -TERM "$SERVER_PID"
    local rc=0
    wait "$SERVER_PID" || rc=$?
    ((rc == 0)) || {
        fail "ferry-server exited $rc on SIGTERM"
        return 1
    }
}

# A port nobody uses, below the ephemeral range so no outgoing connection
# holds it either.
pick_port() {
    local port hex
    while :; do
        port=$((10000 + RANDOM % 22000))
        hex=$(printf ':%04X ' "$port")
        grep -qs "$hex" /proc/net/tcp /proc/net/tcp6 || break
    done
    echo "$port"
}

# Waits until something LISTENs on 127.0.0.1:$1 while $2 is alive. Reads
# /proc/net/tcp rather than probing with `nc -z`: a probe would be the one
# connection that `nc -l` accepts.
wait_listening() {
    local want i
    want=$(printf '0100007F:%04X 00000000:0000 0A' "$1")
    for ((i = 0; i < 500; i++)); do
        grep -q "$want" /proc/net/tcp && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.01
    done
    return 1
}

# Starts an nc receiver on a fresh port; $1 is where the bytes go: "file:PATH",
# "tar:DIR" or "null". Sets RECV_PID and RECV_PORT.
start_receiver() {
    local try
    for ((try = 0; try < 5; try++)); do
        RECV_PORT=$(pick_port)
        case $1 in
        file:*) nc -l 127.0.0.1 "$RECV_PORT" </dev/null >"${1#file:}" & ;;
        tar:*) { nc -l 127.0.0.1 "$RECV_PORT" </dev/null | tar -C "${1#tar:}" -xf -; } & ;;
        null) nc -l 127.0.0.1 "$RECV_PORT" </dev/null >/dev/null & ;;
        esac
        RECV_PID=$!
        BG_PIDS+=("$RECV_PID")
        wait_listening "$RECV_PORT" "$RECV_PID" && return 0
        kill "$RECV_PID" 2>/dev/null || true
        wait "$RECV_PID" 2>/dev/null || true
    done
    die "could not start an nc listener"
}

# --- 3. timed runs ---------------------------------------------------------------

# Checks that $2 holds what $1 holds: count and bytes always, and every byte
# when $3 is "full".
verify() {
    local src=$1 got=$2 mode=$3 want have
    [[ -e $got ]] || {
        echo "$got is missing"
        return 1
    }
    want=$(tree_stats "$src")
    have=$(tree_stats "$got")
    [[ $want == "$have" ]] || {
        echo "expected files/bytes $want, got $have"
        return 1
    }
    if [[ $mode == full ]]; then
        if [[ -f $src ]]; then
            cmp -s "$src" "$got" || {
                echo "content differs"
                return 1
            }
        else
            diff -rq "$src" "$got" >/dev/null || {
                echo "content differs: $(diff -rq "$src" "$got" | head -n 3)"
                return 1
            }
        fi
    fi
}

record() { TIMES[$1]="${TIMES[$1]:-} $2"; }

# One timed ferry upload of workload $1 (run number $2).
ferry_run() {
    local w=$1 run=$2 rc=0 t0 t1 why mode=count
    ((run == 1)) && mode=full
    fresh_dest
    start_server "$DEST"
    warm_source "$w"
    sync
    t0=$(now)
    "$FERRY" send --to "$SERVER_ADDR" "${SRC[$w]}" >"$LOGS/ferry-$w-$run.out" 2>&1 || rc=$?
    t1=$(now)
    stop_server || return 0
    if ((rc != 0)); then
        fail "ferry $w run $run: ferry send exited $rc: $(tail -n 3 "$LOGS/ferry-$w-$run.out")"
    elif ! why=$(verify "${SRC[$w]}" "$DEST/$(basename "${SRC[$w]}")" "$mode"); then
        fail "ferry $w run $run: $why"
    else
        record "ferry:$w" "$(seconds_between "$t0" "$t1")"
    fi
    retire_dest "$w"
}

# One timed nc (and tar) copy of workload $1 (run number $2).
baseline_run() {
    local w=$1 run=$2 rc=0 t0 t1 t2 why got mode=count
    ((run == 1)) && mode=full
    fresh_dest
    if [[ $w == big ]]; then
        got=$DEST/big.bin
        start_receiver "file:$got"
    else
        got=$DEST
        start_receiver "tar:$DEST"
    fi
    warm_source "$w"
    sync
    t0=$(now)
    if [[ $w == big ]]; then
        nc -N 127.0.0.1 "$RECV_PORT" <"${SRC[$w]}" || rc=$?
    else
        tar -C "${SRC[$w]}" -cf - . | nc -N 127.0.0.1 "$RECV_PORT" || rc=$?
    fi
    # The copy is done when the receiver has written everything and exited.
    wait "$RECV_PID" || rc=$?
    t1=$(now)
    # Not part of the baseline's time, but shown beside it: how long until
    # its bytes are on disk too, as ferry's are when it exits.
    sync
    t2=$(now)
    if ((rc != 0)); then
        fail "baseline $w run $run: exited $rc"
    elif ! why=$(verify "${SRC[$w]}" "$got" "$mode"); then
        fail "baseline $w run $run: $why"
    else
        record "baseline:$w" "$(seconds_between "$t0" "$t1")"
        record "synced:$w" "$(seconds_between "$t0" "$t2")"
    fi
    retire_dest "$w"
}

run_workloads() {
    local w run
    for w in "${WORKLOADS[@]}"; do
        say "${LABEL[$w]}: $RUNS runs each, ferry and baseline alternating"
        # Alternating spreads any drift (thermal, other load) over both sides.
        for ((run = 1; run <= RUNS; run++)); do
            ferry_run "$w" "$run"
            baseline_run "$w" "$run"
        done
        say "  ferry:   ${TIMES[ferry:$w]:- none}"
        say "  nc/tar:  ${TIMES[baseline:$w]:- none}"
    done
}

# Raw loopback TCP, memory to memory: no disk and no copy at either end.
# Best of 3, since a ceiling is what the machine can do when nothing else
# gets in the way.
measure_tcp_ceiling() {
    say "raw TCP ceiling: $(size_label "$CEILING_MIB") of zeros through nc, best of 3"
    local t0 t1 rc i secs
    TCP_SECS=
    for ((i = 0; i < 3; i++)); do
        rc=0
        start_receiver null
        t0=$(now)
        head -c "${CEILING_MIB}M" /dev/zero | nc -N 127.0.0.1 "$RECV_PORT" || rc=$?
        wait "$RECV_PID" || rc=$?
        t1=$(now)
        ((rc == 0)) || die "raw TCP measurement failed"
        secs=$(seconds_between "$t0" "$t1")
        TCP_SECS=$(min_of "$secs" "${TCP_SECS:-$secs}")
    done
}

# What writing the big file to this disk and fsyncing it costs: the floor
# under ferry's big-file time whenever the disk is the slower part. Best of 3.
measure_disk_ceiling() {
    say "disk ceiling: copy the big file with fsync, best of 3"
    local t0 t1 i secs
    DISK_SECS=
    for ((i = 0; i < 3; i++)); do
        sync
        t0=$(now)
        dd if="${SRC[big]}" of="$SCRATCH/disk-test" bs=1M conv=fsync status=none
        t1=$(now)
        rm -f "$SCRATCH/disk-test"
        secs=$(seconds_between "$t0" "$t1")
        DISK_SECS=$(min_of "$secs" "${DISK_SECS:-$secs}")
    done
}

# How fast this disk takes the small files with no network at all: tar
# extracting an archive that sits in the page cache. Best of 3.
measure_create_ceiling() {
    say "file creation ceiling: local tar -x of the small files, best of 3"
    local t0 t1 i secs archive=$SCRATCH/small.tar
    tar -C "${SRC[small]}" -cf "$archive" .
    CREATE_SECS=
    for ((i = 0; i < 3; i++)); do
        fresh_dest
        sync
        t0=$(now)
        tar -C "$DEST" -xf "$archive"
        t1=$(now)
        retire_dest small
        secs=$(seconds_between "$t0" "$t1")
        CREATE_SECS=$(min_of "$secs" "${CREATE_SECS:-$secs}")
    done
    rm -f "$archive"
}

min_of() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b) ? a : b }'; }

# --- 5. CPU per GiB ----------------------------------------------------------------

# Reads utime+stime of a live process in seconds.
proc_cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

# One sample can be several times the usual (writeback of earlier runs,
# reclaim): the report gives the median of CPU_RUNS.
CPU_RUNS=3
measure_cpu() {
    say "CPU: $CPU_RUNS ferry sends of the big file under /usr/bin/time"
    local rc run user sys clients="" servers=""
    for ((run = 1; run <= CPU_RUNS; run++)); do
        rc=0
        fresh_dest
        start_server "$DEST"
        warm_source big
        sync
        /usr/bin/time -f '%U %S' -o "$LOGS/cpu.time" \
            "$FERRY" send --to "$SERVER_ADDR" "${SRC[big]}" >"$LOGS/cpu.out" 2>&1 || rc=$?
        servers+="$(proc_cpu_seconds "$SERVER_PID") "
        stop_server || true
        if ((rc != 0)) || ! verify "${SRC[big]}" "$DEST/big.bin" count >/dev/null; then
            fail "CPU run: ferry send exited $rc or the file did not arrive whole"
        fi
        read -r user sys <"$LOGS/cpu.time"
        clients+="$(calc '%.2f' "$user + $sys") "
        rm -rf "$DEST"
    done
    CLIENT_CPU=$(median "$clients") SERVER_CPU=$(median "$servers")
    CLIENT_CPU_RUNS=$clients SERVER_CPU_RUNS=$servers
}

# --- 6. server memory under 72 concurrent clients ----------------------------------

# Prints the highest thread count of process $1 seen until SIGUSR1.
sample_threads() {
    local max=0 n stop=0
    trap 'stop=1' USR1
    while ((!stop)) && [[ -r /proc/$1/status ]]; do
        n=$(awk '/^Threads:/ { print $2 }' "/proc/$1/status" 2>/dev/null) || break
        ((n > max)) && max=$n
        sleep 0.02
    done
    echo "$max"
}

measure_crowd() {
    say "memory: $CROWD concurrent clients, $CROWD_MIB MiB each at $CROWD_RATE/s"
    local dir=$SCRATCH/crowd i pids=() bad=0 t0 t1 stats
    mkdir -p "$dir"
    for ((i = 0; i < CROWD; i++)); do
        head -c "${CROWD_MIB}M" /dev/urandom >"$dir/c$(printf %02d "$i").bin"
    done
    fresh_dest
    start_server "$DEST"
    IDLE_RSS_KB=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SERVER_PID/status")
    # The server runs a thread per connection: its peak thread count shows
    # how many uploads really were open at once.
    sample_threads "$SERVER_PID" >"$LOGS/threads.max" &
    local sampler=$!
    BG_PIDS+=("$sampler")
    sync
    t0=$(now)
    # The rate cap stretches each upload to about a second, so all 72
    # connections are open together instead of finishing one by one.
    for ((i = 0; i < CROWD; i++)); do
        "$FERRY" send --limit-rate "$CROWD_RATE" --to "$SERVER_ADDR" \
            "$dir/c$(printf %02d "$i").bin" >"$LOGS/crowd-$i.out" 2>&1 &
        pids+=($!)
        BG_PIDS+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || {
            bad=$((bad + 1))
            printf '   client %d: %s\n' "$i" "$(tail -n 1 "$LOGS/crowd-$i.out")" >&2
        }
    done
    t1=$(now)
    CROWD_SECS=$(seconds_between "$t0" "$t1")
    # VmHWM is the peak resident set over the server's whole life.
    PEAK_RSS_KB=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SERVER_PID/status")
    kill -USR1 "$sampler"
    wait "$sampler" || true
    PEAK_THREADS=$(cat "$LOGS/threads.max")
    stop_server || true
    stats=$(tree_stats "$DEST")
    CROWD_ARRIVED=${stats% *}
    if ((bad > 0)) || [[ $stats != "$CROWD $((CROWD * CROWD_MIB * 1048576))" ]]; then
        fail "memory run: $bad client(s) failed; server holds $stats (files bytes)"
    fi
    rm -rf "$DEST" "$dir"
}

# --- 4. report -------------------------------------------------------------------------

median() {
    tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "FAIL"; exit }
            if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2]
            else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}

# "ext4 on /dev/vda, no journal": fsync and file creation costs hinge on it.
describe_fs() {
    local type source journal=
    read -r type source < <(findmnt -n -o FSTYPE,SOURCE -T "$1")
    if [[ $type == ext4 && $(cat "/sys/fs/ext4/${source##*/}/journal_task" 2>/dev/null) == "<none>" ]]; then
        journal=", no journal"
    fi
    echo "$type on $source$journal"
}

calc() { awk "BEGIN { printf \"$1\", $2 }"; }

report() {
    local w fm bm ratio rate
    echo "# Ferry benchmark$( ((QUICK)) && echo ' (--quick)')"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
        "Linux $(uname -r), scratch on $(describe_fs "$SCRATCH")," \
        "ferry $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- crates 2>/dev/null || echo ' + uncommitted changes')," \
        "load average $LOAD_AT_START at start, $(cut -d ' ' -f 1-3 /proc/loadavg) at end."
    echo
    echo "| workload | ferry median (s) | baseline median (s) | ratio ferry/baseline | ferry MB/s or files/s |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    for w in "${WORKLOADS[@]}"; do
        fm=$(median "${TIMES[ferry:$w]:-}")
        bm=$(median "${TIMES[baseline:$w]:-}")
        ratio=FAIL rate=FAIL
        [[ $fm == FAIL || $bm == FAIL ]] || ratio=$(calc '%.2f' "$fm / $bm")
        if [[ $fm != FAIL ]]; then
            rate="$(calc '%.0f' "${BYTES[$w]} / $fm / 1e6") MB/s"
            [[ $w == small ]] && rate="$(calc '%.0f' "${FILES[$w]} / $fm") files/s ($rate)"
        fi
        echo "| ${LABEL[$w]} | $fm | $bm | $ratio | $rate |"
    done
    echo
    echo "Baseline: OpenBSD \`nc -N\` into \`nc -l > file\` for the single file;" \
        "\`tar -cf - . | nc -N\` into \`nc -l | tar -xf -\` for the folders." \
        "MB = 10^6 bytes. Medians of $RUNS runs per side, run alternately."
    echo "Ferry's time includes the server making every file durable before acking it; the baseline's does not."
    echo "For comparison with ferry's durable finish, the baseline followed by one \`sync\` (median, s):" \
        "$(for w in "${WORKLOADS[@]}"; do printf '%s: %s; ' "${LABEL[$w]}" "$(median "${TIMES[synced:$w]:-}")"; done | sed 's/; $/./')"
    echo
    echo "Raw times (s):"
    echo
    for w in "${WORKLOADS[@]}"; do
        echo "- ${LABEL[$w]}: ferry${TIMES[ferry:$w]:- none}; baseline${TIMES[baseline:$w]:- none}"
    done
    echo
    echo "Ceilings on this machine (best of 3):"
    echo
    echo "- raw loopback TCP, memory to memory ($(size_label "$CEILING_MIB") of zeros, nc to nc):" \
        "$(calc '%.0f' "$CEILING_MIB * 1048576 / $TCP_SECS / 1e6") MB/s ($TCP_SECS s)"
    echo "- disk write + fsync of the $(size_label "$BIG_MIB") file (dd conv=fsync):" \
        "$(calc '%.0f' "${BYTES[big]} / $DISK_SECS / 1e6") MB/s ($DISK_SECS s)"
    echo "- creating the $(thousands "${FILES[small]}") small files locally (tar -x of a cached archive):" \
        "$(calc '%.0f' "${FILES[small]} / $CREATE_SECS") files/s ($CREATE_SECS s)"
    echo
    local gib
    gib=$(calc '%.6f' "${BYTES[big]} / 1073741824")
    echo "CPU (user + sys) for one ferry send of the $(size_label "$BIG_MIB") file, median of $CPU_RUNS:"
    echo
    echo "- client: $(calc '%.2f' "$CLIENT_CPU / $gib") s per GiB (runs: ${CLIENT_CPU_RUNS% } s)"
    echo "- server (whole process, from /proc): $(calc '%.2f' "$SERVER_CPU / $gib") s per GiB" \
        "(runs: ${SERVER_CPU_RUNS% } s)"
    echo
    local peak verdict
    peak=$(calc '%.1f' "$PEAK_RSS_KB / 1024")
    verdict=$(awk -v p="$peak" -v t="$RSS_TARGET_MIB" 'BEGIN { print (p < t) ? "under" : "OVER" }')
    echo "Server memory with $CROWD concurrent \`ferry send --limit-rate $CROWD_RATE\` clients," \
        "$CROWD_MIB MiB each:"
    echo
    echo "- peak RSS (VmHWM): $peak MiB ($verdict the $RSS_TARGET_MIB MiB target);" \
        "$(calc '%.1f' "$IDLE_RSS_KB / 1024") MiB when idle"
    echo "- $CROWD_ARRIVED of $CROWD files arrived; all clients done in $CROWD_SECS s;" \
        "at most $PEAK_THREADS server threads seen"
    if ((FAILURES)); then
        echo
        echo "**$FAILURES run(s) failed verification; their times are left out.**"
    fi
}

main() {
    LOAD_AT_START=$(cut -d ' ' -f 1-3 /proc/loadavg)
    make_scratch
    install_tools
    build_ferry
    make_workloads
    measure_tcp_ceiling
    measure_disk_ceiling
    measure_create_ceiling
    run_workloads
    measure_cpu
    measure_crowd
    mkdir -p "$(dirname "$RESULTS")"
    report | tee "$RESULTS"
    say "written to ${RESULTS#"$REPO"/}"
    if ((FAILURES)); then
        say "$FAILURES run(s) failed verification"
        exit 1
    fi
}

main
