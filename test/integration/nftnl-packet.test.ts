// The proxy's real-kernel packet test (proxy-nft.test.ts: round-robin DNAT to three
// backend namespaces, NodePort with masquerade, partial syncs, stale conntrack
// cleanup, restart, cleanup) with the proxier programming nftables through
// NftNetlink (nf_tables netlink) instead of `nft -f`: the kernel must behave the same.
process.env.SKIFF_PROXY_TEST_RUNNER = 'netlink';
process.env.SKIFF_NETNS_PREFIX ??= 'sknl-';
await import('./proxy-nft.test.js');
