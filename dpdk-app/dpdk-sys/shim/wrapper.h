/* The DPDK API that dpdk-sys exposes: bindgen reads this file, and shim.c implements the
 * shim_* functions declared below. */
#include <rte_common.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_cycles.h>
#include <rte_version.h>

/* DPDK's fast path is `static inline`: these are real functions around it, so Rust can call
 * them. Each is a one-line forward; compiled with DPDK's own cflags, they inline fully. */
uint16_t shim_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t shim_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *shim_pktmbuf_alloc(struct rte_mempool *pool);
int shim_pktmbuf_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned count);
void shim_pktmbuf_free(struct rte_mbuf *m);
void shim_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned count);
/* The start of the packet data (rte_pktmbuf_mtod). */
uint8_t *shim_pktmbuf_data(struct rte_mbuf *m);
uint16_t shim_pktmbuf_data_len(const struct rte_mbuf *m);
/* Bytes the data may grow by at its end (rte_pktmbuf_tailroom). */
uint16_t shim_pktmbuf_tailroom(const struct rte_mbuf *m);
/* Sets data_len and pkt_len of a single-segment mbuf. Returns -1 and changes nothing when the
 * mbuf is chained or `len` exceeds its data room (buf_len - data_off), 0 otherwise. */
int shim_pktmbuf_set_len(struct rte_mbuf *m, uint16_t len);
uint16_t shim_pktmbuf_nb_segs(const struct rte_mbuf *m);
unsigned shim_lcore_id(void);
int shim_errno(void);
uint64_t shim_rdtsc(void);
uint64_t shim_tsc_hz(void);
/* Sizes and offsets as the C compiler sees them, for the layout tests. */
size_t shim_sizeof_rte_mbuf(void);
size_t shim_sizeof_rte_eth_conf(void);
size_t shim_sizeof_rte_eth_dev_info(void);
size_t shim_sizeof_rte_eth_stats(void);
size_t shim_offsetof_rte_mbuf_data_len(void);
size_t shim_offsetof_rte_mbuf_pkt_len(void);
