#!/usr/bin/env bash
# Binds a NIC to vfio-pci for DPDK, or gives it back to its kernel driver, with the
# dpdk-devbind.py that Debian's `dpdk` package ships.
#   scripts/bind-nic.sh --status             list NICs and their drivers
#   scripts/bind-nic.sh PCI_ADDR             bind to vfio-pci (e.g. 0000:03:00.0)
#   scripts/bind-nic.sh --unbind PCI_ADDR DRIVER   give it back (e.g. ixgbe, i40e, mlx5_core)
# Binding takes the NIC away from the kernel: never bind the interface you are logged in by.
set -euo pipefail
DEVBIND=$(command -v dpdk-devbind.py || echo /usr/bin/dpdk-devbind.py)
[ -x "$DEVBIND" ] || { echo "error: dpdk-devbind.py not found: apt-get install dpdk" >&2; exit 1; }
case "${1:---status}" in
    --status) exec "$DEVBIND" --status-dev net ;;
    --unbind)
        [ $# -eq 3 ] || { echo "usage: $0 --unbind PCI_ADDR DRIVER" >&2; exit 2; }
        exec "$DEVBIND" --bind="$3" "$2" ;;
    *)
        [ "$(id -u)" = 0 ] || { echo "error: needs root" >&2; exit 1; }
        if [ ! -d /sys/bus/pci/drivers/vfio-pci ]; then
            modprobe vfio-pci || { echo "error: no vfio-pci module: enable IOMMU (intel_iommu=on / amd_iommu=on) or use a kernel with VFIO" >&2; exit 1; }
        fi
        exec "$DEVBIND" --bind=vfio-pci "$1" ;;
esac
