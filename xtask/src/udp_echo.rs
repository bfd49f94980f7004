//! The kernel-stack baseline for `cargo xtask bench`: a UDP echo server on ordinary sockets,
//! written the way a user would without this toolkit: epoll, then `recvmmsg` / `sendmmsg` of
//! up to 64 datagrams per system call. Runs for a bounded time and prints how many it echoed.

use anyhow::{Context, Result, bail};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const BATCH: usize = 64;
const BUF: usize = 2048;

pub fn serve(addr: &str, seconds: f64) -> Result<()> {
    let socket = UdpSocket::bind(addr).with_context(|| format!("bind {addr}"))?;
    socket.set_nonblocking(true)?;
    let fd = socket.as_raw_fd();
    // SAFETY: epoll_create1 has no pointer arguments.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        bail!("epoll_create1: {}", std::io::Error::last_os_error());
    }
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    // SAFETY: `ev` is a valid epoll_event that lives across the call; `fd` is our socket.
    if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
        bail!("epoll_ctl: {}", std::io::Error::last_os_error());
    }
    let mut bufs = vec![[0u8; BUF]; BATCH];
    let mut addrs: Vec<libc::sockaddr_storage> =
        // SAFETY: sockaddr_storage is plain data; all-zero is a valid (empty) value.
        (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: BUF,
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is valid before we fill the pointers.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut echoed: u64 = 0;
    while Instant::now() < deadline {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 1];
        // SAFETY: `events` has room for 1 event; 100 ms timeout.
        let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), 1, 100) };
        if n <= 0 {
            continue;
        }
        loop {
            for i in 0..BATCH {
                msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                msgs[i].msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                msgs[i].msg_hdr.msg_iov = &mut iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
                msgs[i].msg_len = 0;
            }
            // SAFETY: every mmsghdr points at a live buffer of BUF bytes and a live
            // sockaddr_storage; the kernel writes at most those sizes.
            let got = unsafe {
                libc::recvmmsg(
                    fd,
                    msgs.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if got <= 0 {
                break;
            }
            for m in msgs.iter_mut().take(got as usize) {
                // Send back exactly what came, to whoever sent it.
                // SAFETY: msg_iov points at one of our iovecs (set above).
                unsafe { (*m.msg_hdr.msg_iov).iov_len = m.msg_len as usize };
            }
            // SAFETY: the first `got` headers describe received datagrams and their senders.
            let sent = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), got as u32, 0) };
            for iov in iovs.iter_mut() {
                iov.iov_len = BUF;
            }
            if sent > 0 {
                echoed += sent as u64;
            }
        }
    }
    // SAFETY: closing the epoll descriptor we created.
    unsafe { libc::close(epfd) };
    println!("{echoed}");
    Ok(())
}
