//! Generates bindings to the system DPDK and compiles the C shim, both with exactly the flags
//! `pkg-config --cflags libdpdk` gives (DPDK's headers need its `-include rte_config.h` and
//! `-march`), and links DPDK dynamically so that EAL can load the packaged poll-mode drivers
//! (net_af_packet, net_af_xdp, net_ring, ... and real NICs' PMDs) from its driver folder.

use std::env;
use std::path::PathBuf;

/// The DPDK API we use: only these are generated, which keeps the bindings (and builds) small.
const FUNCTIONS: &str = "rte_eal_(init|cleanup|mp_remote_launch|remote_launch|wait_lcore|\
    mp_wait_lcore|process_type|get_configuration|has_hugepages|get_runtime_dir)|\
    rte_lcore_(count|index|to_socket_id)|rte_get_(next_lcore|main_lcore)|rte_socket_id|\
    rte_strerror|rte_version|rte_pktmbuf_pool_create|rte_mempool_(free|avail_count|in_use_count)|\
    rte_eth_dev_(count_avail|info_get|configure|start|stop|close|socket_id|get_name_by_port|\
    is_valid_port|adjust_nb_rx_tx_desc)|rte_eth_(rx|tx)_queue_setup|rte_eth_find_next|\
    rte_eth_promiscuous_enable|rte_eth_link_get_nowait|rte_eth_macaddr_get|rte_eth_stats_(get|reset)|\
    rte_eth_link_speed_to_str|shim_.*";
const TYPES: &str = "rte_eth_conf|rte_eth_dev_info|rte_eth_stats|rte_eth_link|rte_ether_addr|\
    rte_mbuf|rte_mempool|rte_eth_rxconf|rte_eth_txconf|lcore_function_t|rte_rmt_call_main_t";
const VARS: &str = "RTE_MAX_LCORE|RTE_MAX_ETHPORTS|RTE_MBUF_DEFAULT_BUF_SIZE|RTE_PKTMBUF_HEADROOM|\
    RTE_ETH_MQ_RX_.*|RTE_ETH_RSS_.*|RTE_ETH_LINK_.*|RTE_ETH_NAME_MAX_LEN|RTE_ETHER_ADDR_LEN|\
    RTE_MEMPOOL_CACHE_MAX_SIZE|SOCKET_ID_ANY";

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=shim/wrapper.h");

    let dpdk = match pkg_config::Config::new()
        .atleast_version("21.11")
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => {
            eprintln!(
                "error: DPDK development files not found ({e}).\n\
                 Install them with `apt-get install dpdk-dev libdpdk-dev` (Debian/Ubuntu), or run \
                 `cargo xtask setup`, which installs everything this project needs."
            );
            std::process::exit(1);
        }
    };

    // The exact flags pkg-config gives, including `-include rte_config.h -march=...`.
    let cflags = pkg_config::get_variable("libdpdk", "cflags")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_default();
    let cflags: Vec<String> = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(String::from)
                .collect()
        })
        .unwrap_or_else(|| cflags.split_whitespace().map(String::from).collect());

    let mut cc = cc::Build::new();
    cc.file("shim/shim.c")
        .include("shim")
        .warnings(true)
        .opt_level(3);
    for flag in &cflags {
        cc.flag(flag);
    }
    cc.compile("dpdk_shim");

    let bindings = bindgen::Builder::default()
        .header("shim/wrapper.h")
        .clang_args(&cflags)
        .clang_arg("-Ishim")
        .allowlist_function(FUNCTIONS.replace(char::is_whitespace, ""))
        .allowlist_type(TYPES.replace(char::is_whitespace, ""))
        .allowlist_var(VARS.replace(char::is_whitespace, ""))
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen could not generate DPDK bindings (is libclang-dev installed?)");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("bindings.rs");
    bindings.write_to_file(&out).expect("write bindings");

    // pkg-config already emitted the -l flags; say which DPDK this is for diagnostics.
    println!("cargo:rustc-env=DPDK_VERSION={}", dpdk.version);
}
