// Package redisclientcheck has no code of its own: its tests hold the Redis client the
// sidecar uses, redisconn.Client on rueidis, to the promises the decision path needs (a
// deadline kept against a stalled master, a counting script never run twice, failover and
// reshard survived with no reply matched to the wrong command, client-side caching with
// invalidation), on real single-node, Sentinel and Cluster topologies, and record the
// rueidis behaviour it relies on. REPORT.md has the measurements that chose rueidis over
// go-redis and the former hand-written redisconn.Pipe (both gone since the migration).
package redisclientcheck
