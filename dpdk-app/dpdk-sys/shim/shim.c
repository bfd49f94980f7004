#include <stddef.h>
#include "wrapper.h"

uint16_t shim_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t shim_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *shim_pktmbuf_alloc(struct rte_mempool *pool)
{
	return rte_pktmbuf_alloc(pool);
}

int shim_pktmbuf_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned count)
{
	return rte_pktmbuf_alloc_bulk(pool, mbufs, count);
}

void shim_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

void shim_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned count)
{
	rte_pktmbuf_free_bulk(mbufs, count);
}

uint8_t *shim_pktmbuf_data(struct rte_mbuf *m)
{
	return rte_pktmbuf_mtod(m, uint8_t *);
}

uint16_t shim_pktmbuf_data_len(const struct rte_mbuf *m)
{
	return rte_pktmbuf_data_len(m);
}

uint16_t shim_pktmbuf_tailroom(const struct rte_mbuf *m)
{
	return rte_pktmbuf_tailroom(m);
}

int shim_pktmbuf_set_len(struct rte_mbuf *m, uint16_t len)
{
	/* Only a single segment, and only within its data room (data_len + tailroom). */
	if (m->nb_segs != 1 || len > m->buf_len - m->data_off)
		return -1;
	m->data_len = len;
	m->pkt_len = len;
	return 0;
}

uint16_t shim_pktmbuf_nb_segs(const struct rte_mbuf *m)
{
	return m->nb_segs;
}

unsigned shim_lcore_id(void)
{
	return rte_lcore_id();
}

int shim_errno(void)
{
	return rte_errno;
}

uint64_t shim_rdtsc(void)
{
	return rte_rdtsc();
}

uint64_t shim_tsc_hz(void)
{
	return rte_get_tsc_hz();
}

size_t shim_sizeof_rte_mbuf(void) { return sizeof(struct rte_mbuf); }
size_t shim_sizeof_rte_eth_conf(void) { return sizeof(struct rte_eth_conf); }
size_t shim_sizeof_rte_eth_dev_info(void) { return sizeof(struct rte_eth_dev_info); }
size_t shim_sizeof_rte_eth_stats(void) { return sizeof(struct rte_eth_stats); }
size_t shim_offsetof_rte_mbuf_data_len(void) { return offsetof(struct rte_mbuf, data_len); }
size_t shim_offsetof_rte_mbuf_pkt_len(void) { return offsetof(struct rte_mbuf, pkt_len); }
