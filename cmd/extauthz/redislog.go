package main

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// redisLogger routes go-redis's own messages (failed dials, pool events) into the process
// logger instead of a bare stderr line. go-redis keeps its logger in a package variable, so
// main sets it once, before any client exists.
type redisLogger struct{ log *zap.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...interface{}) {
	l.log.Warn(fmt.Sprintf(format, v...))
}

func routeRedisLogs(log *zap.Logger) { redis.SetLogger(redisLogger{log: log.Named("go-redis")}) }
