//! `dpdk-app`: the DPDK data path (issue 5). Today it initialises EAL with the arguments it is
//! given, reports the ports EAL found, and cleans up; the poll-mode echo/count loop is not
//! written yet, and the binary says so instead of pretending.

use std::ffi::{CStr, CString};

fn main() {
    let args: Vec<CString> = std::env::args()
        .map(|a| CString::new(a).expect("arguments contain no NUL bytes"))
        .collect();
    let mut argv: Vec<*mut std::ffi::c_char> = args.iter().map(|a| a.as_ptr().cast_mut()).collect();
    // SAFETY: argv holds pointers to NUL-terminated strings that outlive EAL's use of them
    // (EAL may permute the array, which we own; it does not free the strings).
    let consumed = unsafe { dpdk_sys::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
    if consumed < 0 {
        // SAFETY: rte_strerror returns a pointer to a static string for any error number.
        let msg = unsafe { CStr::from_ptr(dpdk_sys::rte_strerror(dpdk_sys::shim_errno())) };
        eprintln!(
            "error: DPDK EAL initialisation failed: {}\n\
             try: run as root; reserve hugepages (scripts/hugepages.sh) or pass --no-huge -m 256; \
             give a port with --vdev (e.g. --vdev net_ring0) or bind a NIC (scripts/bind-nic.sh)",
            msg.to_string_lossy()
        );
        std::process::exit(1);
    }
    // SAFETY: EAL is initialised; these calls only read its state.
    let ports = unsafe { dpdk_sys::rte_eth_dev_count_avail() };
    eprintln!(
        "dpdk-app: EAL initialised with DPDK {}, {ports} port(s) available",
        dpdk_sys::DPDK_VERSION
    );
    eprintln!("dpdk-app: the poll-mode echo/count loop is not implemented yet (issue 5); exiting");
    // SAFETY: no lcore is running; EAL was initialised above.
    unsafe { dpdk_sys::rte_eal_cleanup() };
    std::process::exit(2);
}
