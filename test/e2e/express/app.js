// A plain Express app with express-session + connect-redis (ioredis), configured the way such
// apps usually are. The extauthz e2e tests log in here and then ask the sidecar about the very
// cookie Express sent, so both sides of the interop are the real thing.
//
// Environment: PORT (listen port on 127.0.0.1), REDIS_URL, SECRETS (comma-separated, newest
// first: the first signs, all verify). Prints "listening" once it accepts connections.
"use strict";

const express = require("express");
const session = require("express-session");
const { RedisStore } = require("connect-redis");
const Redis = require("ioredis");

const port = Number(process.env.PORT || 0);
const redisURL = process.env.REDIS_URL || "redis://127.0.0.1:6379/0";
const secrets = (process.env.SECRETS || "keyboard cat").split(",");

const redis = new Redis(redisURL, { maxRetriesPerRequest: 2 });
redis.on("error", (err) => console.error("redis:", err.message));

const app = express();
app.use(
  session({
    store: new RedisStore({ client: redis, prefix: "sess:" }),
    secret: secrets,
    name: "connect.sid",
    resave: false,
    saveUninitialized: false,
    cookie: { maxAge: 3600000 },
  }),
);

// POST /login?user=alice&role=admin: a new session (regenerated, as apps do against fixation)
// holding the user, the role and a passport-shaped field for dotted-path mappings.
app.post("/login", (req, res, next) => {
  const user = String(req.query.user || "");
  if (!user) return res.status(400).json({ error: "user is required" });
  req.session.regenerate((err) => {
    if (err) return next(err);
    req.session.userId = user;
    req.session.role = String(req.query.role || "user");
    req.session.passport = { user: String(req.query.passport || "42") };
    req.session.save((err) => {
      if (err) return next(err);
      res.json({ sid: req.sessionID, user });
    });
  });
});

// POST /logout: destroys the session in Redis.
app.post("/logout", (req, res, next) => {
  req.session.destroy((err) => {
    if (err) return next(err);
    res.clearCookie("connect.sid");
    res.json({ ok: true });
  });
});

// GET /whoami: the session as Express sees it.
app.get("/whoami", (req, res) => {
  if (!req.session.userId) return res.status(401).json({ error: "not logged in" });
  res.json(req.session);
});

// Handlers under prefixes the differential test protects with sidecar policies (admin role,
// any session, API key) or leaves open. They check nothing themselves, as apps behind an
// authorizing proxy do, and answer which handler ran, with Express's own reading of the request
// (req.params are decoded by Express), so the test can tell what the app served for each target.
function handler(name) {
  return (req, res) => {
    res.json({ handler: name, params: req.params, path: req.path, url: req.originalUrl });
  };
}
app.all("/admin", handler("admin"));
app.all("/admin/users/:id", handler("admin-users-id"));
app.all("/admin/:id", handler("admin-id"));
app.all("/api/*", handler("api"));
app.all("/internal/*", handler("internal"));
app.all("/public/*", handler("public"));
app.all("/", handler("root"));

// GET /feed/*: a page anyone may see that is better for a signed-in caller (auth: optional in
// the sidecar). It trusts the identity headers, as such apps do, and answers every copy of each
// it received (from rawHeaders, so that two copies cannot hide behind Express's joining), plus
// Express's own view of the session, so that a test sees exactly what reached the app.
const identityHeaders = ["x-user-id", "x-user-role", "x-api-key-id", "x-extauthz-degraded", "x-api-key", "authorization"];
app.get("/feed/*", (req, res) => {
  const seen = {};
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i].toLowerCase();
    if (identityHeaders.includes(name)) (seen[name] = seen[name] || []).push(req.rawHeaders[i + 1]);
  }
  res.json({ handler: "feed", path: req.path, headers: seen, session: req.session.userId || null });
});

const server = app.listen(port, "127.0.0.1", () => {
  console.log("listening", server.address().port);
});

function shutdown() {
  server.close();
  redis.disconnect();
  process.exit(0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
