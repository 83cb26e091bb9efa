// Package redisclientcheck has no code of its own: its tests hold the Redis client
// candidates of issue 11 (rueidis, go-redis v9 and today's redisconn.Pipe) to the promises
// the decision path needs, on real single-node, Sentinel and Cluster topologies, and
// measure them against each other. REPORT.md has the numbers and the choice.
package redisclientcheck
