// Package lab proves provisiond's networks in a multi-node lab on one
// machine (`make lab-test`, root).
//
// Every lab node is a long-lived holder process (`unshare --net --mount`)
// with its own network namespace and mount namespace, in which /run/netns
// is a private tmpfs; its provisiond is started, stopped and restarted
// inside them with nsenter, never in a fresh namespace per start, so the
// namespaces and mounts it made stay with the holder across restarts. Each
// node has its own data directory (database, runc root, bundles): what its
// orphan cleanup lists (network namespaces, runc containers, bundles,
// nftables rules, links) is its own and never another node's or the
// host's.
//
//	underlay ns: bridge br0 ── n1 ─ eth0 node 1 (10.99.0.11/24, default via 10.99.0.1)
//	                       ── n2 ─ eth0 node 2 (10.99.0.12/24)
//	                       ── up ─ eth0 upstream (10.99.0.1/24): the "internet", runs explorerd
//	                       ── lt ─ eth0 laptop (10.99.0.2/24): the owner, runs provctl
//
// All traffic stays inside these namespaces; the host's interfaces and
// /run/netns are never touched. The tests run only when PROVISIOND_LAB_TEST
// is set (the make target sets it): each builds a lab, which takes tens of
// seconds.
package lab
