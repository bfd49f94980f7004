//! The safe layer over `dpdk-sys`: EAL, mempool, ports, queues, bursts of mbufs that free
//! themselves, and lcore launch. All of the application's `unsafe` lives here (and in the
//! `burst` submodule), each block with its reason; the rest of `dpdk-app` is safe Rust.
//!
//! # Ownership, and why every safe function here is safe
//!
//! The types form a chain of borrows that the compiler checks, so the order DPDK needs at
//! shut-down (and on every error path) is the only order that compiles:
//!
//! ```text
//! Eal ─borrowed by─> Mempool<'e> ─borrowed by─> StartedPort<'p> ─borrowed by─> Queue<'q>
//!  └─borrowed by─> Port<'e> ──start(self)──────────┘                 Burst<Mbuf<'q>> ─┘
//! ```
//!
//! - [`Eal`] exists once per process; dropping it runs `rte_eal_cleanup` and removes the
//!   runtime directory (`/var/run/dpdk/<file-prefix>`), after everything below is gone.
//! - [`Port`] is handed out once per port id ([`Eal::take_port`]); it is neither `Copy` nor
//!   `Clone`, so no second handle to a port id exists in safe code.
//! - [`Port::start`] consumes the port and gives a [`StartedPort`], which borrows the
//!   [`Mempool`] its RX rings take mbufs from: the pool cannot be freed while a port that may
//!   hold its mbufs is open. Dropping a `StartedPort` stops and closes the port; a port that
//!   fails half-way through `start` is closed the same way.
//! - [`StartedPort::take_queues`] gives each queue's [`Queue`] handle once. A queue handle
//!   borrows its port (the port cannot stop while it is polled), is not `Clone`, and polls
//!   through `&mut self`: one lcore at a time, by construction. It is `Send`, so it can be
//!   moved into the one worker lcore that polls it ([`Eal::run_on_workers`]).
//! - [`Mbuf`] is an owned mbuf (freed on drop) whose lifetime ends with its queue's borrow,
//!   so no mbuf outlives its pool. A [`Burst`] holds them without holes (see `burst`).

mod burst;

pub use burst::{Burst, MAX_BURST, Packet, PacketBuf};

use anyhow::{Context, Result, anyhow, bail};
use dpdk_sys as sys;
use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString, c_void};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Set by the first [`Eal::init`]: EAL runs once per process.
static EAL_CLAIMED: AtomicBool = AtomicBool::new(false);

/// An initialised EAL (at most one per process). Dropping it runs `rte_eal_cleanup` and
/// removes the runtime directory. It stays on the thread that made it (the main lcore).
#[derive(Debug)]
pub struct Eal {
    /// Which port ids have been handed out as a [`Port`].
    ports_taken: RefCell<Vec<bool>>,
    /// `/var/run/dpdk/<file-prefix>` of a primary process, removed after cleanup.
    runtime_dir: Option<PathBuf>,
    _main_thread: PhantomData<*const ()>,
}

impl Eal {
    /// Initialises EAL with `args` (the program name first, then EAL's own arguments).
    pub fn init(args: &[String]) -> Result<Eal> {
        let cstrings: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_str()).map_err(|_| anyhow!("argument {a:?} has a NUL byte")))
            .collect::<Result<_>>()?;
        if EAL_CLAIMED.swap(true, Ordering::SeqCst) {
            bail!("DPDK EAL can be initialised only once per process");
        }
        // EAL keeps pointers into argv for the life of the process (it may print them later):
        // leak the strings and the array on purpose, once per process.
        let mut argv: Vec<*mut std::ffi::c_char> =
            cstrings.into_iter().map(|c| c.into_raw()).collect();
        let argc = argv.len() as i32;
        let argv_ptr = argv.as_mut_ptr();
        std::mem::forget(argv);
        // SAFETY: argv holds `argc` valid NUL-terminated strings that are never freed; EAL may
        // permute the array, which nothing else uses. EAL_CLAIMED makes this the only call.
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
        // SAFETY: EAL is initialised; it returns its own process type.
        let primary =
            unsafe { sys::rte_eal_process_type() } == sys::rte_proc_type_t_RTE_PROC_PRIMARY;
        // SAFETY: EAL is initialised; the result is a pointer to EAL's static, NUL-terminated
        // runtime directory path (or null), which we copy at once.
        let dir = unsafe { sys::rte_eal_get_runtime_dir() };
        let runtime_dir = (primary && !dir.is_null()).then(|| {
            // SAFETY: non-null and NUL-terminated, as above.
            let bytes = unsafe { CStr::from_ptr(dir) }.to_bytes();
            PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes))
        });
        Ok(Eal {
            ports_taken: RefCell::new(vec![false; sys::RTE_MAX_ETHPORTS as usize]),
            runtime_dir,
            _main_thread: PhantomData,
        })
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

    /// The one handle to port `id`: each id is handed out once, so no two owners of a port
    /// (and of its queues) exist.
    pub fn take_port(&self, id: u16) -> Result<Port<'_>> {
        // SAFETY: EAL is initialised; any id is accepted.
        if unsafe { sys::rte_eth_dev_is_valid_port(id) } != 1 {
            bail!("port {id} does not exist (EAL found {:?})", self.ports());
        }
        let mut taken = self.ports_taken.borrow_mut();
        let slot = taken
            .get_mut(usize::from(id))
            .with_context(|| format!("port {id} is beyond RTE_MAX_ETHPORTS"))?;
        if std::mem::replace(slot, true) {
            bail!("port {id} is already in use");
        }
        Ok(Port {
            id,
            _eal: PhantomData,
        })
    }

    /// Runs each of `jobs` on its own worker lcore (the first job on the first worker, and so
    /// on) and `main_work(launched_all)` on the calling (main) lcore, and returns when all of
    /// them have returned. Each job is moved into exactly one lcore, which is what makes
    /// handing it queue handles sound; it may borrow from the caller (like a scoped thread),
    /// because this function does not return, nor unwind, before every launched lcore is done.
    /// If a launch fails, `main_work(false)` must make the running workers stop (the wait
    /// would never end otherwise); if `main_work` panics, the wait still happens first.
    /// A job that panics aborts the process (it runs behind an `extern "C"` frame).
    pub fn run_on_workers<W: FnOnce() + Send>(
        &self,
        jobs: Vec<W>,
        main_work: impl FnOnce(bool),
    ) -> Result<()> {
        // SAFETY: reads the calling thread's lcore id; no preconditions.
        if unsafe { sys::shim_lcore_id() } != self.main_lcore() {
            bail!("lcores can only be launched from the main lcore");
        }
        let lcores = self.lcores();
        let workers = &lcores[1..];
        if jobs.len() > workers.len() {
            bail!(
                "{} jobs for {} worker lcore(s): give EAL more lcores with -l",
                jobs.len(),
                workers.len()
            );
        }
        extern "C" fn trampoline<W: FnOnce() + Send>(arg: *mut c_void) -> i32 {
            // SAFETY: `arg` points at one slot of `slots` in the launching frame, given to this
            // lcore only; that frame waits for this lcore before `slots` goes away, and does
            // not touch `slots` until then. W is Send, so running it here is allowed.
            let slot = unsafe { &mut *arg.cast::<Option<W>>() };
            if let Some(work) = slot.take() {
                work();
            }
            0
        }
        /// Waits for every worker lcore when dropped: on return and on unwinding alike.
        struct WaitForWorkers;
        impl Drop for WaitForWorkers {
            fn drop(&mut self) {
                // SAFETY: EAL is initialised and we are on the main lcore; blocks until every
                // launched worker has returned, after which no lcore refers to `slots`.
                unsafe { sys::rte_eal_mp_wait_lcore() };
            }
        }
        let mut slots: Vec<Option<W>> = jobs.into_iter().map(Some).collect();
        let base = slots.as_mut_ptr();
        // Declared after `slots`, so dropped (waited for) before it.
        let wait = WaitForWorkers;
        let mut result = Ok(());
        let mut launched = 0;
        for (i, lcore) in workers.iter().take(slots.len()).enumerate() {
            // SAFETY: `i < slots.len()`, so the pointer is in bounds; each slot goes to exactly
            // one lcore; `trampoline::<W>` matches lcore_function_t; the slot stays alive
            // until `wait` is dropped. `lcore` is an enabled worker lcore id from EAL.
            let rc = unsafe {
                sys::rte_eal_remote_launch(Some(trampoline::<W>), base.add(i).cast(), *lcore)
            };
            if rc != 0 {
                result = Err(anyhow!("could not launch lcore {lcore}: {}", strerror(-rc)));
                break;
            }
            launched += 1;
        }
        main_work(launched == slots.len());
        drop(wait);
        drop(slots);
        result
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: every lcore has returned (run_on_workers waits before it returns) and every
        // port, pool and mbuf is gone by now: they borrow the Eal, so they are dropped first.
        unsafe { sys::rte_eal_cleanup() };
        if let Some(dir) = &self.runtime_dir {
            remove_runtime_dir(dir);
        }
    }
}

/// Removes the files EAL 22.11 leaves in its runtime directory after `rte_eal_cleanup`
/// (`config`, `fbarray_*`, `hugepage_info`, and sockets), then the directory if it is empty.
/// Only EAL's own file names are touched, and nothing recursively.
fn remove_runtime_dir(dir: &std::path::Path) {
    if !matches!(
        dir.components().next_back(),
        Some(std::path::Component::Normal(_))
    ) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let eal_file = name == "config"
            || name == "hugepage_info"
            || name.starts_with("fbarray_")
            || name.starts_with("mp_socket")
            || name.starts_with("dpdk_telemetry");
        if eal_file && e.file_type().is_ok_and(|t| !t.is_dir()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// A packet mbuf pool. Ports borrow it, so it outlives every port whose rings hold its mbufs.
#[derive(Debug)]
pub struct Mempool<'e> {
    ptr: NonNull<sys::rte_mempool>,
    _eal: PhantomData<&'e ()>,
}

// SAFETY: a DPDK mempool is safe to use from many lcores at once (per-lcore caches, lock-free
// ring underneath); we only pass its pointer to DPDK functions.
unsafe impl Send for Mempool<'_> {}
// SAFETY: as above.
unsafe impl Sync for Mempool<'_> {}

impl<'e> Mempool<'e> {
    pub fn new(_eal: &'e Eal, name: &str, mbufs: u32, socket: i32) -> Result<Mempool<'e>> {
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
        NonNull::new(ptr)
            .map(|ptr| Mempool {
                ptr,
                _eal: PhantomData,
            })
            .ok_or_else(|| {
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

impl Drop for Mempool<'_> {
    fn drop(&mut self) {
        // SAFETY: every StartedPort using the pool borrows it, so all of them are stopped and
        // closed by now, and every Mbuf (whose lifetime ends with its port's) is freed. Mbufs a
        // closed driver kept are never touched again.
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

// The control-path calls shared by Port and StartedPort. Each is safe for any port id: the
// ethdev control functions check the id and return an error for an unknown one.

fn port_name(id: u16) -> String {
    let mut buf = [0 as std::ffi::c_char; 64];
    // SAFETY: `buf` has room for RTE_ETH_NAME_MAX_LEN (64) bytes including the NUL.
    let rc = unsafe { sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) };
    if rc != 0 {
        return format!("port{id}");
    }
    // SAFETY: on success DPDK wrote a NUL-terminated name into `buf`.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn port_socket(id: u16) -> i32 {
    // SAFETY: reads the port's NUMA node; any port id is accepted.
    unsafe { sys::rte_eth_dev_socket_id(id) }
}

/// A port EAL found, not yet started; the one handle to its id ([`Eal::take_port`]).
#[derive(Debug)]
pub struct Port<'e> {
    id: u16,
    _eal: PhantomData<&'e Eal>,
}

impl Port<'_> {
    pub fn name(&self) -> String {
        port_name(self.id)
    }

    pub fn socket(&self) -> i32 {
        port_socket(self.id)
    }

    /// The port's driver (`net_af_xdp`, `net_ixgbe`, ...).
    pub fn driver(&self) -> Result<String> {
        let info = self.info()?;
        if info.driver_name.is_null() {
            return Ok(String::new());
        }
        // SAFETY: a non-null `driver_name` points at the driver's static NUL-terminated name.
        Ok(unsafe { CStr::from_ptr(info.driver_name) }
            .to_string_lossy()
            .into_owned())
    }

    /// The RX and TX ring sizes to use: `rxd` / `txd`, or where they are 0, the driver's
    /// preferred size (as testpmd does), else 1024. The preference matters: net_af_xdp wants
    /// 2048, and with 1024 its fill ring runs dry under load and it echoes half as much.
    pub fn ring_sizes(&self, rxd: u16, txd: u16) -> Result<(u16, u16)> {
        let info = self.info()?;
        let pick = |asked: u16, preferred: u16| match (asked, preferred) {
            (0, 0) => 1024,
            (0, p) => p,
            (a, _) => a,
        };
        Ok((
            pick(rxd, info.default_rxportconf.ring_size),
            pick(txd, info.default_txportconf.ring_size),
        ))
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
    /// Returns the started port and the number of RX/TX descriptors per queue actually used.
    /// On an error after the port was configured, the port is stopped (if it started) and
    /// closed before this returns.
    pub fn start<'p>(
        self,
        pool: &'p Mempool<'_>,
        queues: u16,
        rxd: u16,
        txd: u16,
    ) -> Result<(StartedPort<'p>, u16, u16)> {
        let info = self.info()?;
        if queues == 0 || queues > info.max_rx_queues || queues > info.max_tx_queues {
            bail!(
                "port {} ({}) has at most {} RX / {} TX queues; {queues} polling lcores need one \
                 each (use fewer lcores with -l)",
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
        // From here on, dropping `port` (on any error below) closes the port.
        let mut port = StartedPort {
            id: self.id,
            queues,
            started: false,
            queues_taken: Cell::new(false),
            _pool: PhantomData,
        };
        let (mut nrx, mut ntx) = (rxd, txd);
        // SAFETY: the two pointers are valid u16s that DPDK adjusts in place.
        unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(self.id, &mut nrx, &mut ntx) };
        let socket = self.socket().max(0) as u32;
        for q in 0..queues {
            // SAFETY: the port is configured with `queues` queues; a null rxconf means the
            // driver's defaults; `pool` outlives the port (`port` borrows it for 'p).
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
            // SAFETY: as above; a null txconf means the driver's defaults.
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
        port.started = true;
        // SAFETY: the port is started; failure (a PMD without promiscuous mode) is harmless.
        unsafe { sys::rte_eth_promiscuous_enable(self.id) };
        Ok((port, nrx, ntx))
    }
}

/// A configured and started port. It borrows the mempool its RX rings take mbufs from, so
/// the pool outlives it; dropping it stops and closes the port, which needs every [`Queue`]
/// handle (they borrow it) to be gone first: no lcore polls a stopped port.
#[derive(Debug)]
pub struct StartedPort<'p> {
    id: u16,
    queues: u16,
    started: bool,
    queues_taken: Cell<bool>,
    _pool: PhantomData<&'p Mempool<'p>>,
}

impl StartedPort<'_> {
    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn name(&self) -> String {
        port_name(self.id)
    }

    /// The handles to queues `0..queues`, each given once: `None` on a second call.
    pub fn take_queues(&self) -> Option<Vec<Queue<'_>>> {
        if self.queues_taken.replace(true) {
            return None;
        }
        Some(
            (0..self.queues)
                .map(|queue| Queue {
                    port: self.id,
                    queue,
                    _port: PhantomData,
                })
                .collect(),
        )
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

    /// The port's counters. Read while lcores poll (l2fwd's arrangement): the driver sums its
    /// per-queue counters, which may be a burst behind.
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
}

impl Drop for StartedPort<'_> {
    fn drop(&mut self) {
        // SAFETY: no Queue handle exists any more (they borrow `self`), so no lcore polls the
        // port and no burst holds an mbuf from it; the pool is still alive (borrowed for 'p).
        // Stopping returns the RX rings' mbufs to the pool; closing releases the queues.
        unsafe {
            if self.started {
                sys::rte_eth_dev_stop(self.id);
            }
            sys::rte_eth_dev_close(self.id);
        }
    }
}

/// The handle to one RX/TX queue pair of a started port: the only one (from
/// [`StartedPort::take_queues`]), not `Clone`, polled through `&mut self`. It can move to
/// another lcore, but only one lcore at a time can use it.
#[derive(Debug)]
pub struct Queue<'q> {
    port: u16,
    queue: u16,
    _port: PhantomData<&'q ()>,
}

// Option<Mbuf> must be a nullable mbuf pointer: the burst's slots are handed to DPDK as an
// array of `struct rte_mbuf *`.
const _: () = assert!(
    size_of::<Option<Mbuf<'static>>>() == size_of::<*mut sys::rte_mbuf>()
        && align_of::<Option<Mbuf<'static>>>() == align_of::<*mut sys::rte_mbuf>()
);

impl<'q> Queue<'q> {
    /// Receives up to `max` packets into `burst`, after freeing whatever it still held;
    /// returns how many.
    #[inline]
    pub fn rx(&mut self, burst: &mut Burst<Mbuf<'q>>, max: usize) -> usize {
        let n = max.min(MAX_BURST) as u16;
        let slots = burst.slots_for_fill();
        // SAFETY: `Option<Mbuf>` is a nullable `*mut rte_mbuf` (Mbuf is a transparent NonNull;
        // asserted above), so `slots` is an array of MAX_BURST >= n mbuf pointers, all null
        // (nothing is overwritten without being freed). The port is started and has this
        // queue, and this handle is its only one (`&mut self`): no other lcore polls it.
        let got =
            unsafe { sys::shim_rx_burst(self.port, self.queue, slots.as_mut_ptr().cast(), n) };
        let got = usize::from(got.min(n));
        // SAFETY: rte_eth_rx_burst stored `got` valid, non-null mbuf pointers, now ours, in the
        // first `got` slots; got <= n <= MAX_BURST.
        unsafe { burst.set_filled(got) };
        got
    }

    /// Transmits `burst`; frees what the driver did not take. Returns (sent, freed unsent).
    #[inline]
    pub fn tx(&mut self, burst: &mut Burst<Mbuf<'q>>) -> (usize, usize) {
        if burst.is_empty() {
            return (0, 0);
        }
        let (port, queue) = (self.port, self.queue);
        burst.submit(|slots| {
            // SAFETY: the slots are all `Some` (the burst's invariant), so as nullable mbuf
            // pointers they are `slots.len()` (<= MAX_BURST) valid mbufs that we own; the
            // driver takes the ones it reports as sent and `submit` forgets exactly those.
            // This handle is the queue's only one: no other lcore transmits on it.
            let sent = unsafe {
                sys::shim_tx_burst(port, queue, slots.as_mut_ptr().cast(), slots.len() as u16)
            };
            usize::from(sent)
        })
    }
}

/// One owned mbuf, freed to its pool when dropped. It cannot outlive the queue it came from,
/// hence neither its port nor its pool.
#[repr(transparent)]
pub struct Mbuf<'q> {
    ptr: NonNull<sys::rte_mbuf>,
    _queue: PhantomData<&'q ()>,
}

// SAFETY: an mbuf we own may be used and freed on any lcore (DPDK hands them between lcores
// through rings all the time); nothing else refers to it.
unsafe impl Send for Mbuf<'_> {}

impl std::fmt::Debug for Mbuf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Mbuf").field(&self.ptr).finish()
    }
}

impl Drop for Mbuf<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and free it once; its pool is alive (see the type's docs).
        unsafe { sys::shim_pktmbuf_free(self.ptr.as_ptr()) };
    }
}

impl PacketBuf for Mbuf<'_> {
    /// The first segment's data: multi-segment packets (not produced by our setup) are given
    /// as their first segment only; callers check [`PacketBuf::is_multi_segment`].
    #[inline]
    fn packet(&mut self) -> Packet<'_> {
        let m = self.ptr.as_ptr();
        // The fields are read through bindgen's layout of struct rte_mbuf (checked against
        // the C headers by bindgen's layout tests) rather than by a C call each: this runs
        // once per packet. rte_pktmbuf_mtod is buf_addr + data_off; the tailroom is
        // buf_len - data_off - data_len.
        // SAFETY: `m` is a valid mbuf that we own (`&mut self`); its data starts data_off
        // bytes into its buffer and data_len + tailroom bytes from there are inside the
        // buffer (buf_len), which nobody else touches while we hold it.
        unsafe {
            let mb = &*m;
            let off = usize::from(mb.data_off);
            let len = usize::from(mb.data_len);
            let room = usize::from(mb.buf_len).saturating_sub(off).max(len);
            let data = mb.buf_addr.cast::<u8>().add(off);
            Packet {
                buf: std::slice::from_raw_parts_mut(data, room),
                len,
            }
        }
    }

    #[inline]
    fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let m = self.ptr.as_ptr();
            // SAFETY: prefetching is only a hint and never faults; `m` is a valid mbuf we own,
            // so reading its buf_addr and data_off for the address is a plain field read.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(m.cast());
                let data = (*m)
                    .buf_addr
                    .cast::<u8>()
                    .wrapping_add(usize::from((*m).data_off));
                _mm_prefetch::<_MM_HINT_T0>(data.cast());
            }
        }
    }

    #[inline]
    fn is_multi_segment(&self) -> bool {
        // SAFETY: a valid mbuf that we own; a plain field read.
        unsafe { (*self.ptr.as_ptr()).nb_segs > 1 }
    }

    #[inline]
    fn set_len(&mut self, len: usize) -> bool {
        let Ok(len) = u16::try_from(len) else {
            return false;
        };
        // SAFETY: a valid mbuf that we own; the shim refuses a chained mbuf and a length past
        // the data room, so data_len/pkt_len always describe bytes inside the buffer.
        unsafe { sys::shim_pktmbuf_set_len(self.ptr.as_ptr(), len) == 0 }
    }
}
