//! The safe layer over `dpdk-sys`: EAL, mempool, ports, bursts of mbufs that free themselves,
//! and lcore launch. All of the application's `unsafe` lives here, each block with its reason;
//! the rest of `dpdk-app` is safe Rust.

use anyhow::{Result, anyhow, bail};
use dpdk_sys as sys;
use std::ffi::{CStr, CString, c_void};
use std::ptr::NonNull;

/// The most mbufs one burst holds.
pub const MAX_BURST: usize = 256;

/// The DPDK error text for `rte_errno` (or a given error number).
pub fn strerror(errnum: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static (or thread-local) NUL-terminated string
    // for any error number.
    unsafe { CStr::from_ptr(sys::rte_strerror(errnum)) }
        .to_string_lossy()
        .into_owned()
}

fn last_error() -> String {
    // SAFETY: reads the calling thread's rte_errno; no preconditions.
    strerror(unsafe { sys::shim_errno() })
}

/// An initialised EAL. Dropping it runs `rte_eal_cleanup`.
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialises EAL with `args` (the program name first, then EAL's own arguments).
    pub fn init(args: &[String]) -> Result<Eal> {
        let cstrings: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_str()).map_err(|_| anyhow!("argument {a:?} has a NUL byte")))
            .collect::<Result<_>>()?;
        // EAL keeps pointers into argv for the life of the process (it may print them later):
        // leak the strings and the array on purpose, once per process.
        let mut argv: Vec<*mut std::ffi::c_char> =
            cstrings.into_iter().map(|c| c.into_raw()).collect();
        let argc = argv.len() as i32;
        let argv_ptr = argv.as_mut_ptr();
        std::mem::forget(argv);
        // SAFETY: argv holds `argc` valid NUL-terminated strings that are never freed; EAL may
        // permute the array, which nothing else uses.
        let rc = unsafe { sys::rte_eal_init(argc, argv_ptr) };
        if rc < 0 {
            let err = last_error();
            bail!(
                "DPDK EAL initialisation failed: {err}.\n\
                 What to try: run as root; reserve hugepages (scripts/hugepages.sh) or pass \
                 `--no-huge -m 256`; check the --vdev / PCI arguments (`--vdev net_ring0` needs \
                 no hardware); give each concurrent DPDK process its own --file-prefix"
            );
        }
        Ok(Eal { _private: () })
    }

    /// Every enabled lcore id, the main lcore first.
    pub fn lcores(&self) -> Vec<u32> {
        let mut v = vec![self.main_lcore()];
        let mut i = u32::MAX; // "start from the first", as RTE_LCORE_FOREACH_WORKER does
        loop {
            // SAFETY: EAL is initialised; rte_get_next_lcore only reads its configuration.
            i = unsafe { sys::rte_get_next_lcore(i, 1, 0) };
            if i >= sys::RTE_MAX_LCORE {
                break;
            }
            v.push(i);
        }
        v
    }

    pub fn main_lcore(&self) -> u32 {
        // SAFETY: EAL is initialised.
        unsafe { sys::rte_get_main_lcore() }
    }

    /// Ports EAL found (PCI devices bound to DPDK and `--vdev`s).
    pub fn ports(&self) -> Vec<u16> {
        let mut v = Vec::new();
        // SAFETY: EAL is initialised; rte_eth_find_next only reads the port table.
        let mut p = unsafe { sys::rte_eth_find_next(0) };
        while u32::from(p) < sys::RTE_MAX_ETHPORTS {
            v.push(p);
            // SAFETY: as above.
            p = unsafe { sys::rte_eth_find_next(p + 1) };
        }
        v
    }

    /// Runs `work(i)` on the `i`th of `workers` (worker lcore ids) and `main_work(launched_all)`
    /// on the calling (main) lcore, and returns when all of them have returned. Borrowing
    /// `work` for the whole call is what makes handing it to other lcores sound. If a launch
    /// fails, `main_work(false)` must make the running workers stop (the wait would never end
    /// otherwise).
    pub fn run_on_lcores<F: Fn(usize) + Sync>(
        &self,
        workers: &[u32],
        work: &F,
        main_work: impl FnOnce(bool),
    ) -> Result<()> {
        struct Job<'a, F> {
            work: &'a F,
            index: usize,
        }
        extern "C" fn trampoline<F: Fn(usize) + Sync>(arg: *mut c_void) -> i32 {
            // SAFETY: `arg` is a `&Job<F>` from the launching frame below, which waits for
            // this lcore before the Job goes out of scope; F is Sync, so sharing is allowed.
            let job = unsafe { &*(arg as *const Job<'_, F>) };
            (job.work)(job.index);
            0
        }
        let jobs: Vec<Job<'_, F>> = (0..workers.len())
            .map(|index| Job { work, index })
            .collect();
        let mut launched = 0;
        let mut result = Ok(());
        for (job, lcore) in jobs.iter().zip(workers) {
            // SAFETY: `trampoline::<F>` matches lcore_function_t; `job` stays alive until
            // rte_eal_mp_wait_lcore below returns.
            let rc = unsafe {
                sys::rte_eal_remote_launch(
                    Some(trampoline::<F>),
                    (job as *const Job<'_, F>).cast_mut().cast(),
                    *lcore,
                )
            };
            if rc != 0 {
                result = Err(anyhow!("could not launch lcore {lcore}: {}", strerror(-rc)));
                break;
            }
            launched += 1;
        }
        main_work(launched == workers.len());
        // SAFETY: EAL is initialised; blocks until every launched worker has returned, after
        // which no lcore refers to `jobs`.
        unsafe { sys::rte_eal_mp_wait_lcore() };
        result
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: every lcore has returned and every port is closed by now (they borrow the
        // Eal, so they are dropped first).
        unsafe { sys::rte_eal_cleanup() };
    }
}

/// A packet mbuf pool.
#[derive(Debug)]
pub struct Mempool {
    ptr: NonNull<sys::rte_mempool>,
}

// SAFETY: a DPDK mempool is safe to use from many lcores at once (per-lcore caches, lock-free
// ring underneath); we only pass its pointer to DPDK functions.
unsafe impl Send for Mempool {}
// SAFETY: as above.
unsafe impl Sync for Mempool {}

impl Mempool {
    pub fn new(_eal: &Eal, name: &str, mbufs: u32, socket: i32) -> Result<Mempool> {
        let cname = CString::new(name)?;
        let cache = sys::RTE_MEMPOOL_CACHE_MAX_SIZE.min(256);
        // SAFETY: EAL is initialised; `cname` outlives the call (DPDK copies the name).
        let ptr = unsafe {
            sys::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                mbufs,
                cache,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                socket,
            )
        };
        NonNull::new(ptr).map(|ptr| Mempool { ptr }).ok_or_else(|| {
            anyhow!(
                "could not create a pool of {mbufs} mbufs: {} (with --no-huge, give EAL more \
                 memory with -m; or reserve more hugepages)",
                last_error()
            )
        })
    }

    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool is valid for our lifetime.
        unsafe { sys::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: ports using the pool are closed before the pool is dropped (main() drops
        // them in that order) and no mbuf of it is still held.
        unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) }
    }
}

/// Port statistics (`rte_eth_stats`).
#[derive(Clone, Copy, Debug, Default)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

/// An ethdev port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    pub id: u16,
}

impl Port {
    pub fn name(&self) -> String {
        let mut buf = [0 as std::ffi::c_char; 64];
        // SAFETY: `buf` has room for RTE_ETH_NAME_MAX_LEN (64) bytes including the NUL.
        let rc = unsafe { sys::rte_eth_dev_get_name_by_port(self.id, buf.as_mut_ptr()) };
        if rc != 0 {
            return format!("port{}", self.id);
        }
        // SAFETY: on success DPDK wrote a NUL-terminated name into `buf`.
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    pub fn socket(&self) -> i32 {
        // SAFETY: reads the port's NUMA node; any port id is accepted.
        unsafe { sys::rte_eth_dev_socket_id(self.id) }
    }

    fn info(&self) -> Result<sys::rte_eth_dev_info> {
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: `info` is a valid, writable rte_eth_dev_info.
        let rc = unsafe { sys::rte_eth_dev_info_get(self.id, &mut info) };
        if rc != 0 {
            bail!(
                "port {}: cannot read device info: {}",
                self.id,
                strerror(-rc)
            );
        }
        Ok(info)
    }

    /// Configures `queues` RX/TX queue pairs (RSS when more than one and the port has it),
    /// sets up their rings on `pool`, starts the port and turns on promiscuous mode.
    /// Returns the number of RX/TX descriptors per queue actually used.
    pub fn start(&self, queues: u16, rxd: u16, txd: u16, pool: &Mempool) -> Result<(u16, u16)> {
        let info = self.info()?;
        if queues > info.max_rx_queues || queues > info.max_tx_queues {
            bail!(
                "port {} ({}) has at most {} RX / {} TX queues; {queues} lcores need one each \
                 (use fewer lcores with -l)",
                self.id,
                self.name(),
                info.max_rx_queues,
                info.max_tx_queues
            );
        }
        let mut conf = sys::rte_eth_conf::default();
        if queues > 1 && info.flow_type_rss_offloads != 0 {
            conf.rxmode.mq_mode = sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = info.flow_type_rss_offloads;
        }
        // SAFETY: `conf` is a valid configuration that DPDK copies.
        let rc = unsafe { sys::rte_eth_dev_configure(self.id, queues, queues, &conf) };
        if rc != 0 {
            bail!("port {}: configure failed: {}", self.id, strerror(-rc));
        }
        let (mut nrx, mut ntx) = (rxd, txd);
        // SAFETY: the two pointers are valid u16s that DPDK adjusts in place.
        unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(self.id, &mut nrx, &mut ntx) };
        let socket = self.socket().max(0) as u32;
        for q in 0..queues {
            // SAFETY: the port is configured with `queues` queues; a null rxconf/txconf means
            // the driver's defaults; `pool` outlives the port (see Mempool::drop).
            let rc = unsafe {
                sys::rte_eth_rx_queue_setup(
                    self.id,
                    q,
                    nrx,
                    socket,
                    std::ptr::null(),
                    pool.ptr.as_ptr(),
                )
            };
            if rc != 0 {
                bail!(
                    "port {} RX queue {q}: setup failed: {}",
                    self.id,
                    strerror(-rc)
                );
            }
            // SAFETY: as above.
            let rc =
                unsafe { sys::rte_eth_tx_queue_setup(self.id, q, ntx, socket, std::ptr::null()) };
            if rc != 0 {
                bail!(
                    "port {} TX queue {q}: setup failed: {}",
                    self.id,
                    strerror(-rc)
                );
            }
        }
        // SAFETY: every queue is set up.
        let rc = unsafe { sys::rte_eth_dev_start(self.id) };
        if rc != 0 {
            bail!("port {}: start failed: {}", self.id, strerror(-rc));
        }
        // SAFETY: the port is started; failure (a PMD without promiscuous mode) is harmless.
        unsafe { sys::rte_eth_promiscuous_enable(self.id) };
        Ok((nrx, ntx))
    }

    pub fn mac(&self) -> Result<[u8; 6]> {
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: `addr` is a valid, writable rte_ether_addr.
        let rc = unsafe { sys::rte_eth_macaddr_get(self.id, &mut addr) };
        if rc != 0 {
            bail!(
                "port {}: cannot read its MAC address: {}",
                self.id,
                strerror(-rc)
            );
        }
        Ok(addr.addr_bytes)
    }

    /// (link up, speed in Mbit/s).
    pub fn link(&self) -> (bool, u32) {
        let mut link = sys::rte_eth_link::default();
        // SAFETY: `link` is a valid, writable rte_eth_link.
        unsafe { sys::rte_eth_link_get_nowait(self.id, &mut link) };
        (link.link_status() != 0, link.link_speed)
    }

    pub fn stats(&self) -> PortStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: `s` is a valid, writable rte_eth_stats.
        unsafe { sys::rte_eth_stats_get(self.id, &mut s) };
        PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// Stops and closes the port (after every lcore has stopped polling it).
    pub fn stop_and_close(&self) {
        // SAFETY: no lcore polls the port any more (the caller waited for them).
        unsafe {
            sys::rte_eth_dev_stop(self.id);
            sys::rte_eth_dev_close(self.id);
        }
    }
}

/// A burst of received mbufs, owned: whatever is still in it when dropped is freed.
pub struct Burst {
    mbufs: [*mut sys::rte_mbuf; MAX_BURST],
    len: usize,
}

impl std::fmt::Debug for Burst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Burst").field("len", &self.len).finish()
    }
}

impl Default for Burst {
    fn default() -> Self {
        Burst {
            mbufs: [std::ptr::null_mut(); MAX_BURST],
            len: 0,
        }
    }
}

/// A packet of a burst: its data (room to grow included) and its length.
pub struct Packet<'a> {
    /// The whole data room from the packet's start: `len` bytes of packet, then tailroom.
    pub buf: &'a mut [u8],
    pub len: usize,
}

impl Burst {
    /// Receives up to `max` packets from `port`'s `queue`; returns how many.
    pub fn rx(&mut self, port: Port, queue: u16, max: usize) -> usize {
        self.free_all();
        let n = max.min(MAX_BURST) as u16;
        // SAFETY: `mbufs` has room for `n` pointers; the port and queue were set up and are
        // polled by this lcore only (one queue per lcore).
        let got = unsafe { sys::shim_rx_burst(port.id, queue, self.mbufs.as_mut_ptr(), n) };
        self.len = usize::from(got);
        self.len
    }

    /// The `i`th packet. Multi-segment packets (not produced by our setup) are given as their
    /// first segment only; callers count and drop them.
    pub fn packet(&mut self, i: usize) -> Option<Packet<'_>> {
        let m = *self.mbufs[..self.len].get(i)?;
        // SAFETY: `m` is a valid mbuf owned by this burst; its data room starts at the
        // shim's data pointer and spans data_len + tailroom bytes, which nobody else touches
        // while we hold it.
        unsafe {
            let data = sys::shim_pktmbuf_data(m);
            let len = usize::from(sys::shim_pktmbuf_data_len(m));
            let room = len + usize::from(sys::shim_pktmbuf_tailroom(m));
            Some(Packet {
                buf: std::slice::from_raw_parts_mut(data, room),
                len,
            })
        }
    }

    pub fn is_multi_segment(&self, i: usize) -> bool {
        // SAFETY: the mbuf at `i` is valid and owned by this burst.
        self.mbufs[..self.len]
            .get(i)
            .is_some_and(|m| unsafe { sys::shim_pktmbuf_nb_segs(*m) } > 1)
    }

    /// Sets the length of packet `i` (after a rewrite that changed it).
    pub fn set_len(&mut self, i: usize, len: u16) {
        if let Some(m) = self.mbufs[..self.len].get(i) {
            // SAFETY: the mbuf is valid and owned by this burst; `len` fits its data room
            // (the caller wrote at most `Packet::buf.len()` bytes).
            unsafe { sys::shim_pktmbuf_set_len(*m, len) };
        }
    }

    /// Moves packet `i` into `out` (for transmission); the slot is left empty.
    pub fn move_to(&mut self, i: usize, out: &mut Burst) {
        if i < self.len && out.len < MAX_BURST {
            out.mbufs[out.len] = self.mbufs[i];
            out.len += 1;
            self.mbufs[i] = std::ptr::null_mut();
        }
    }

    /// Transmits the burst on `port`'s `queue`; frees what the driver did not take. Returns
    /// (sent, freed unsent).
    pub fn tx(&mut self, port: Port, queue: u16) -> (usize, usize) {
        if self.len == 0 {
            return (0, 0);
        }
        // SAFETY: the first `len` pointers are valid mbufs owned by this burst; the driver
        // takes ownership of the ones it reports as sent.
        let sent = usize::from(unsafe {
            sys::shim_tx_burst(port.id, queue, self.mbufs.as_mut_ptr(), self.len as u16)
        });
        for m in &mut self.mbufs[..sent] {
            *m = std::ptr::null_mut();
        }
        let unsent = self.len - sent;
        self.free_all();
        (sent, unsent)
    }

    /// Frees every mbuf still owned.
    pub fn free_all(&mut self) {
        for m in &mut self.mbufs[..self.len] {
            if !m.is_null() {
                // SAFETY: a non-null slot is an mbuf this burst owns; it is freed once and the
                // slot cleared.
                unsafe { sys::shim_pktmbuf_free(*m) };
                *m = std::ptr::null_mut();
            }
        }
        self.len = 0;
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.free_all();
    }
}
