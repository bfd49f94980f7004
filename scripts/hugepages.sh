#!/usr/bin/env bash
# Reserves 2 MiB hugepages for DPDK and mounts hugetlbfs.
#   scripts/hugepages.sh [PAGES]   reserve PAGES pages (default 512 = 1 GiB) and mount
#   scripts/hugepages.sh --status  show what is reserved and mounted
#   scripts/hugepages.sh --release give the pages back (0 reserved)
set -euo pipefail
MNT=/dev/hugepages
NR=/proc/sys/vm/nr_hugepages
status() {
    echo "hugepages: $(cat $NR) reserved, $(grep HugePages_Free /proc/meminfo | awk '{print $2}') free ($(grep Hugepagesize /proc/meminfo | awk '{print $2, $3}') each)"
    if mount | grep -q "on $MNT type hugetlbfs"; then echo "hugetlbfs: mounted on $MNT"; else echo "hugetlbfs: not mounted on $MNT"; fi
}
[ "$(id -u)" = 0 ] || { echo "error: needs root (writes $NR and mounts hugetlbfs)" >&2; exit 1; }
case "${1:-512}" in
    --status) status ;;
    --release) echo 0 > $NR; status ;;
    *[!0-9]*) echo "usage: $0 [PAGES|--status|--release]" >&2; exit 2 ;;
    *)
        echo "$1" > $NR
        got=$(cat $NR)
        if [ "$got" -lt "$1" ]; then
            echo "warning: asked for $1 pages, the kernel gave $got (memory is fragmented; try at boot: hugepages=$1)" >&2
        fi
        mkdir -p $MNT
        mount | grep -q "on $MNT type hugetlbfs" || mount -t hugetlbfs nodev $MNT
        status
        ;;
esac
