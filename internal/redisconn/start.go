package redisconn

// Start begins connecting in the background, as the first call would. The server calls it at
// start-up so that the first request does not pay for the dial and readiness turns true as
// soon as Redis answers; the CLI and tests need not call it (every call starts the builder,
// and WaitReady waits for it).
func (c *Client) Start() { c.start() }
