//! Packet capture from a poll loop: what it received and what it sent back, written as pcapng
//! that tcpdump, tshark and Wireshark read.
//!
//! The loop owns a [`Tap`], the producer end of a bounded single-producer ring of bytes
//! (`rtrb`, lock-free, allocated once); [`Tap::record`] copies a frame's first `snaplen` bytes
//! with a 16-byte header into it, or, when the ring is full, counts the frame as dropped and
//! moves on: the data path never waits for the disk. A [`Writer`] thread drains every tap's
//! ring into one pcapng file (`pcap-file`): one interface block for the interface, and per
//! packet an enhanced packet block with the direction (`epb_flags`: inbound / outbound), the
//! queue (`epb_queue`) and, on the first packet written after frames were lost to a full
//! ring, how many (`epb_dropcount`).
//! With capture off, a loop holds no tap and pays one branch per frame.

use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgBlock;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use std::borrow::Cow;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bytes of the per-record header in the ring: time (ns since the epoch), original length,
/// captured length, direction, and one spare byte.
const HEADER: usize = 16;
/// The most a record keeps of a frame (a UMEM frame or an mbuf is at most this large).
pub const MAX_SNAPLEN: usize = 65535;

/// Which way a frame went through the loop (pcapng `epb_flags` bits 0-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received by the loop.
    In = 1,
    /// Sent by the loop (a reply).
    Out = 2,
}

/// The loop's end of a capture ring.
#[derive(Debug)]
pub struct Tap {
    ring: rtrb::Producer<u8>,
    snaplen: usize,
    dropped: Arc<AtomicU64>,
    /// Nanoseconds since the epoch of the loop's current batch (set once per batch).
    now_ns: u64,
    /// `now_ns` comes from a monotonic clock anchored to the wall clock at start.
    anchor: (std::time::Instant, u64),
}

impl Tap {
    /// Stamps the frames recorded from now on (call once per batch: one clock read).
    #[inline]
    pub fn set_time(&mut self) {
        self.now_ns = self.anchor.1 + self.anchor.0.elapsed().as_nanos() as u64;
    }

    /// Copies the first `snaplen` bytes of `frame` into the ring, or counts it as dropped if
    /// the ring has no room. Never blocks, never allocates.
    #[inline]
    pub fn record(&mut self, direction: Direction, frame: &[u8]) {
        let caplen = frame.len().min(self.snaplen);
        let Ok(mut chunk) = self.ring.write_chunk(HEADER + caplen) else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(&self.now_ns.to_le_bytes());
        header[8..12].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        header[12..14].copy_from_slice(&(caplen as u16).to_le_bytes());
        header[14] = direction as u8;
        let (a, b) = chunk.as_mut_slices();
        let mut bytes = header.iter().chain(&frame[..caplen]);
        for slot in a.iter_mut().chain(b.iter_mut()) {
            *slot = *bytes.next().unwrap_or(&0);
        }
        chunk.commit_all();
    }

    /// Frames this tap had no room for.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The writer's end of one tap's ring.
#[derive(Debug)]
struct Source {
    ring: rtrb::Consumer<u8>,
    dropped: Arc<AtomicU64>,
    /// Drops already reported in an `epb_dropcount`.
    reported: u64,
    /// `epb_queue` with this source's queue.
    queue_option: EnhancedPacketOption<'static>,
}

/// Where the capture goes.
#[derive(Clone, Debug)]
pub enum Output {
    File(std::path::PathBuf),
    Stdout,
}

/// Creates (or, for a FIFO, opens) the capture file. Opening a FIFO for writing waits for a
/// reader, without end and deaf to Ctrl-C; so a FIFO nobody reads is an error instead. It is
/// first opened non-blocking (which fails with ENXIO without a reader), and that handle is held
/// until the real one is open, so the reader never sees the writers drop to none (end of file).
fn create_file(path: &std::path::Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let cannot =
        |e: std::io::Error| format!("cannot create the capture file {} ({e})", path.display());
    let is_fifo = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo());
    let reader_check = if is_fifo {
        let probe = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path);
        match probe {
            Ok(f) => Some(f),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                return Err(format!(
                    "the capture FIFO {} has no reader: start the reader first (e.g. `tcpdump \
                     -r {}`)",
                    path.display(),
                    path.display()
                ));
            }
            Err(e) => return Err(cannot(e)),
        }
    } else {
        None
    };
    let file = std::fs::File::create(path).map_err(cannot)?;
    drop(reader_check);
    Ok(file)
}

/// Checks the file of a data path's `--capture FILE` (`load`, `run`, `dpdk-app`) before
/// anything starts. Their standard output carries their rate lines, so `-` is refused rather
/// than taken as a file named `-`.
pub fn check_capture_file(path: &std::path::Path) -> Result<(), String> {
    const REFUSED: &str = "--capture - : --capture writes a file (standard output carries the \
                           rate lines); to read the frames as they come, give it a FIFO \
                           (`mkfifo`) that tcpdump reads, or run `xdp-user dump -w - | tcpdump \
                           -r -` beside `load` or `run`";
    if path == std::path::Path::new("-") {
        return Err(REFUSED.into());
    }
    Ok(())
}

impl Output {
    /// `-` means standard output.
    pub fn parse(s: &str) -> Output {
        if s == "-" {
            Output::Stdout
        } else {
            Output::File(s.into())
        }
    }
}

/// A pcapng file being written: its interface blocks, then packets. Used by the loops'
/// capture writer and by `xdp-user dump` (the XDP program's captures).
pub struct PcapFile {
    writer: PcapNgWriter<std::io::BufWriter<Box<dyn Write + Send>>>,
}

/// What a write of a [`PcapFile`] came to, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Done,
    /// The reader of the pipe or FIFO written to has gone (EPIPE): the normal end of
    /// `xdp-user dump -w - | tcpdump -c N`, not a failure. Nothing more can be written.
    ReaderGone,
}

/// A write's I/O result as [`Written`], or the message of a real failure.
fn written(r: std::io::Result<()>) -> Result<Written, String> {
    match r {
        Ok(()) => Ok(Written::Done),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Written::ReaderGone),
        Err(e) => Err(format!("capture: write failed: {e}")),
    }
}

impl std::fmt::Debug for PcapFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapFile").finish_non_exhaustive()
    }
}

impl PcapFile {
    /// Creates `output` with one Ethernet interface block per `(name, snaplen)`, with
    /// nanosecond timestamps; packets name their interface by index in this list.
    pub fn create(output: &Output, interfaces: &[(&str, usize)]) -> Result<PcapFile, String> {
        let sink: Box<dyn Write + Send> = match output {
            Output::Stdout => Box::new(std::io::stdout()),
            Output::File(path) => Box::new(create_file(path)?),
        };
        let mut writer = PcapNgWriter::new(std::io::BufWriter::with_capacity(1 << 20, sink))
            .map_err(|e| format!("cannot write the pcapng header: {e}"))?;
        for (name, snaplen) in interfaces {
            writer
                .write_pcapng_block(InterfaceDescriptionBlock {
                    linktype: DataLink::ETHERNET,
                    snaplen: *snaplen as u32,
                    options: vec![
                        InterfaceDescriptionOption::IfName(Cow::Owned(name.to_string())),
                        // Timestamps are in nanoseconds.
                        InterfaceDescriptionOption::IfTsResol(9),
                    ],
                })
                .map_err(|e| format!("cannot write the pcapng interface block: {e}"))?;
        }
        Ok(PcapFile { writer })
    }

    /// Writes one packet of interface `interface`, at `ts_ns` nanoseconds since the epoch.
    pub fn packet(
        &mut self,
        interface: u32,
        ts_ns: u64,
        original_len: u32,
        data: &[u8],
        options: Vec<EnhancedPacketOption<'_>>,
    ) -> Result<Written, String> {
        let block = self.writer.write_pcapng_block(EnhancedPacketBlock {
            interface_id: interface,
            timestamp: Duration::from_nanos(ts_ns),
            original_len,
            data: Cow::Borrowed(data),
            options,
        });
        match block {
            Ok(_) => Ok(Written::Done),
            Err(pcap_file::PcapError::IoError(e)) => written(Err(e)),
            Err(e) => Err(format!("capture: write failed: {e}")),
        }
    }

    pub fn flush(&mut self) -> Result<Written, String> {
        written(self.writer.get_mut().flush())
    }
}

/// Nanoseconds since the epoch now.
pub fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// Said after a capture's count when its reader went away before the end.
pub const READER_GONE_NOTE: &str = "; its reader went away, so later frames were not written";

/// What a capture wrote, when it ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureReport {
    pub written: u64,
    /// Frames lost to full rings (each is also reported in the file as `epb_dropcount`).
    pub dropped: u64,
    /// The reader of the pipe or FIFO written to went away; what came after was not written.
    pub reader_gone: bool,
}

#[cfg(feature = "report")]
impl CaptureReport {
    /// The JSON `capture` object of `run` and `dpdk-app`.
    pub fn to_json(&self, file: Option<&std::path::Path>) -> serde_json::Value {
        serde_json::json!({
            "file": file.map(|p| p.display().to_string()),
            "written": self.written,
            "dropped": self.dropped,
            "reader_gone": self.reader_gone,
        })
    }
}

/// A running capture: one writer thread, one tap per queue.
#[derive(Debug)]
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<CaptureReport, String>>>,
}

/// Ring bytes per tap.
const RING_BYTES: usize = 8 << 20;

/// Opens `output` and starts the writer for `queues` taps of `iface`, keeping `snaplen` bytes
/// of each frame; returns the capture and one tap per queue, in the order given.
pub fn start(
    output: &Output,
    iface: &str,
    queues: &[u32],
    snaplen: usize,
) -> Result<(Capture, Vec<Tap>), String> {
    start_with(output, iface, queues, snaplen, RING_BYTES, None)
}

/// [`start`] with rings of `ring_bytes`, and a writer that waits for `go` (tests).
fn start_with(
    output: &Output,
    iface: &str,
    queues: &[u32],
    snaplen: usize,
    ring_bytes: usize,
    go: Option<Arc<AtomicBool>>,
) -> Result<(Capture, Vec<Tap>), String> {
    let snaplen = snaplen.clamp(1, MAX_SNAPLEN);
    let writer = PcapFile::create(output, &[(iface, snaplen)])?;
    let anchor = (std::time::Instant::now(), wall_clock_ns());
    let mut taps = Vec::new();
    let mut sources = Vec::new();
    for &queue in queues {
        let (producer, consumer) = rtrb::RingBuffer::new(ring_bytes);
        let dropped = Arc::new(AtomicU64::new(0));
        taps.push(Tap {
            ring: producer,
            snaplen,
            dropped: Arc::clone(&dropped),
            now_ns: anchor.1,
            anchor,
        });
        sources.push(Source {
            ring: consumer,
            dropped,
            reported: 0,
            // epb_queue (6): the queue the frame came in on, a 32-bit number.
            queue_option: epb_option(6, &queue.to_ne_bytes())?,
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                while go.as_ref().is_some_and(|g| !g.load(Ordering::Relaxed)) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                drain(writer, sources, &stop)
            })
            .map_err(|e| format!("cannot start the capture thread: {e}"))?
    };
    Ok((
        Capture {
            stop,
            thread: Some(thread),
        },
        taps,
    ))
}

impl Capture {
    /// Writes what the rings still hold (call after the loops stopped) and closes the file.
    pub fn finish(mut self) -> Result<CaptureReport, String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err("the capture thread panicked".into()),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An enhanced-packet-block option pcap-file 2.0 has no variant for (`epb_queue`,
/// `epb_verdict`): the type it uses for such options sits in a private module, so the option
/// is parsed from its own bytes, in the native byte order the writer uses.
pub fn epb_option(code: u16, value: &[u8]) -> Result<EnhancedPacketOption<'static>, String> {
    // Interface, timestamp and lengths (all zero: no data), then the option and opt_endofopt.
    let mut body = vec![0u8; 20];
    body.extend_from_slice(&code.to_ne_bytes());
    body.extend_from_slice(&(value.len() as u16).to_ne_bytes());
    body.extend_from_slice(value);
    body.resize(body.len().next_multiple_of(4) + 4, 0);
    let (_, epb) = EnhancedPacketBlock::from_slice::<byteorder_slice::NativeEndian>(&body)
        .map_err(|e| format!("pcapng option {code}: {e}"))?;
    epb.options
        .into_iter()
        .next()
        .map(|o| o.into_owned())
        .ok_or_else(|| format!("pcapng option {code} did not parse back"))
}

/// The writer thread: drains the rings until told to stop, then once more.
fn drain(
    mut writer: PcapFile,
    mut sources: Vec<Source>,
    stop: &AtomicBool,
) -> Result<CaptureReport, String> {
    let mut report = CaptureReport::default();
    // A reader that has gone (a FIFO's `tcpdump -c 10` has its frames) ends the writing, not
    // the data path: from then on the rings are emptied unwritten, so the loops never block
    // or count drops for it, and the report says so.
    let flush = |writer: &mut PcapFile, report: &mut CaptureReport| {
        if !report.reader_gone && writer.flush()? == Written::ReaderGone {
            report.reader_gone = true;
        }
        Ok::<(), String>(())
    };
    loop {
        // Read the flag before draining: what a loop recorded before it stopped is written.
        let last = stop.load(Ordering::Relaxed);
        let mut wrote = 0;
        for s in sources.iter_mut() {
            if report.reader_gone {
                if let Ok(chunk) = s.ring.read_chunk(s.ring.slots()) {
                    chunk.commit_all();
                }
                continue;
            }
            wrote += drain_one(&mut writer, s, &mut report)?;
        }
        if last {
            break;
        }
        if wrote == 0 {
            // Nothing waiting: flush, so a reader of the file sees packets as they come.
            flush(&mut writer, &mut report)?;
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    report.dropped = sources
        .iter()
        .map(|s| s.dropped.load(Ordering::Relaxed))
        .sum();
    flush(&mut writer, &mut report)?;
    Ok(report)
}

/// Writes every complete record of one ring; returns how many. Stops at a reader that has
/// gone, saying so in `report`.
fn drain_one(
    writer: &mut PcapFile,
    s: &mut Source,
    report: &mut CaptureReport,
) -> Result<u64, String> {
    let mut n = 0;
    let mut data = vec![0u8; MAX_SNAPLEN];
    while s.ring.slots() >= HEADER {
        let mut header = [0u8; HEADER];
        {
            let chunk = s.ring.read_chunk(HEADER).map_err(|e| e.to_string())?;
            let (a, b) = chunk.as_slices();
            header[..a.len()].copy_from_slice(a);
            header[a.len()..].copy_from_slice(b);
            chunk.commit_all();
        }
        let ts = u64::from_le_bytes(header[..8].try_into().unwrap_or_default());
        let original_len = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default());
        let caplen = usize::from(u16::from_le_bytes([header[12], header[13]]));
        let direction = u32::from(header[14]);
        // The producer commits header and data together: the data is there.
        let chunk = s.ring.read_chunk(caplen).map_err(|e| e.to_string())?;
        let (a, b) = chunk.as_slices();
        data[..a.len()].copy_from_slice(a);
        data[a.len()..caplen].copy_from_slice(b);
        chunk.commit_all();
        let mut options = vec![
            EnhancedPacketOption::Flags(direction),
            s.queue_option.clone(),
        ];
        let dropped = s.dropped.load(Ordering::Relaxed);
        if dropped > s.reported {
            options.push(EnhancedPacketOption::DropCount(dropped - s.reported));
            s.reported = dropped;
        }
        if writer.packet(0, ts, original_len, &data[..caplen], options)? == Written::ReaderGone {
            report.reader_gone = true;
            break;
        }
        n += 1;
        report.written += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::{Block, PcapNgReader};

    #[test]
    fn options_without_a_variant_are_written_as_given() {
        match epb_option(6, &7u32.to_ne_bytes()).unwrap() {
            EnhancedPacketOption::Unknown(u) => {
                assert_eq!(
                    (u.code, u.length, &u.value[..]),
                    (6, 4, &7u32.to_ne_bytes()[..])
                );
            }
            other => panic!("{other:?}"),
        }
    }

    fn read_back(path: &std::path::Path) -> Vec<(u32, Vec<u8>, u32, Vec<u64>)> {
        let mut r = PcapNgReader::new(std::fs::File::open(path).unwrap()).unwrap();
        let mut out = Vec::new();
        while let Some(block) = r.next_block() {
            if let Block::EnhancedPacket(epb) = block.unwrap() {
                let mut flags = 0;
                let mut drops = Vec::new();
                for o in &epb.options {
                    match o {
                        EnhancedPacketOption::Flags(f) => flags = *f,
                        EnhancedPacketOption::DropCount(d) => drops.push(*d),
                        _ => {}
                    }
                }
                out.push((flags, epb.data.to_vec(), epb.original_len, drops));
            }
        }
        out
    }

    /// The reader of a pipe goes away mid-capture: the capture ends its writing without an
    /// error, says so, and keeps emptying the ring, so a tap never finds it full.
    #[test]
    fn a_reader_that_goes_away_ends_the_writing_not_the_capture() {
        use std::os::fd::AsRawFd;
        let (reader, writer) = std::io::pipe().unwrap();
        // The write end, opened again by path: what `--capture FIFO` does.
        let path = std::path::PathBuf::from(format!("/proc/self/fd/{}", writer.as_raw_fd()));
        let (capture, mut taps) = start(&Output::File(path), "dut0", &[0], 64).unwrap();
        drop((reader, writer));
        let request = crate::fixtures::UDP4_ECHO_REQUEST;
        taps[0].set_time();
        // Far more than the ring holds (8 MiB), at a pace it is emptied at (every 5 ms).
        for _ in 0..100 {
            for _ in 0..2000 {
                taps[0].record(Direction::In, &request);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(taps);
        let report = capture.finish().expect("a gone reader is not an error");
        assert!(report.reader_gone, "{report:?}");
        assert_eq!(report.dropped, 0, "the ring kept being emptied: {report:?}");
    }

    #[test]
    fn records_come_back_in_order_with_direction_and_snaplen() {
        let path = std::env::temp_dir().join(format!("kbp-capture-{}.pcapng", std::process::id()));
        let (capture, mut taps) = start(&Output::File(path.clone()), "dut0", &[0], 40).unwrap();
        let request = crate::fixtures::UDP4_ECHO_REQUEST;
        taps[0].set_time();
        taps[0].record(Direction::In, &request);
        taps[0].record(Direction::Out, &request[..20]);
        drop(taps);
        let report = capture.finish().unwrap();
        assert_eq!(
            report,
            CaptureReport {
                written: 2,
                dropped: 0,
                reader_gone: false,
            }
        );
        let got = read_back(&path);
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].0, &got[0].1[..], got[0].2),
            (1, &request[..40], request.len() as u32)
        );
        assert_eq!((got[1].0, &got[1].1[..], got[1].2), (2, &request[..20], 20));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_full_ring_drops_counts_and_says_so_in_the_file() {
        let path =
            std::env::temp_dir().join(format!("kbp-capture-full-{}.pcapng", std::process::id()));
        let go = Arc::new(AtomicBool::new(false));
        let (capture, mut taps) = start_with(
            &Output::File(path.clone()),
            "dut0",
            &[3],
            MAX_SNAPLEN,
            4096,
            Some(Arc::clone(&go)),
        )
        .unwrap();
        // The writer waits: two 1500-byte frames fill the 4 KiB ring, the third is dropped,
        // a small one still fits.
        let frame = vec![0xabu8; 1500];
        for _ in 0..3 {
            taps[0].record(Direction::In, &frame);
        }
        assert_eq!(taps[0].dropped(), 1);
        taps[0].record(Direction::In, &frame[..64]);
        assert_eq!(taps[0].dropped(), 1);
        drop(taps);
        go.store(true, Ordering::Relaxed);
        let report = capture.finish().unwrap();
        assert_eq!(
            report,
            CaptureReport {
                written: 3,
                dropped: 1,
                reader_gone: false,
            }
        );
        let got = read_back(&path);
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].1.len(), 64);
        let reported: u64 = got.iter().flat_map(|g| g.3.iter()).sum();
        assert_eq!(reported, 1, "every drop is in an epb_dropcount");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_file_that_cannot_be_created_is_a_clear_error() {
        let e = start(
            &Output::File("/nonexistent/dir/x.pcapng".into()),
            "dut0",
            &[0],
            100,
        )
        .unwrap_err();
        assert!(
            e.contains("cannot create the capture file /nonexistent/dir/x.pcapng"),
            "{e}"
        );
    }
}
