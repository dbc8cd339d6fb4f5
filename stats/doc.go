// Package stats is the one place that knows what a reservation costs and
// what a node has, in resource units: CRU (logical cores) and MRU, SRU and
// HRU (GiB of memory, SSD and HDD storage).
//
// The table of what each reservation type takes is Units:
//
//	type       CRU   MRU              SRU                     HRU
//	container  cpu   memory/1024      disk_size/1024 (root)   –
//	volume     –     –                size (type ssd)         size (type hdd)
//	network    –     –                –                       –
//
// (container memory and disk_size are in MiB, volume size in GiB.)
//
// Used units are a pure function of the active set: Compute sums the Units
// recorded on every active record and counts workloads per type. It is the
// reference the Engine's figures are checked against, so a counter can
// never double or drift.
//
// Node measures the hardware through gopsutil (logical CPUs, total memory,
// the size of the SSD and HDD storage paths) and keeps a system reserve
// back, so that workloads never take the memory vital services need.
package stats
