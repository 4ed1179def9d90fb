//! End-to-end tests: each starts the real `minos` binary as a child process on a port of
//! its own, in a fresh data directory, and talks to it over HTTP.

// Starting, stopping and killing the server; a remote_write client.
mod util;

// Durability: kill -9 during ingest, graceful shutdown, restarts.
mod durability;

// Damaged files: torn and corrupt write-ahead log, corrupt blocks.
mod corruption;

// The HTTP surface: remote_write answers, export, series and label endpoints, metrics.
mod http;

// The command line and config file.
mod cli;

// Grafana's Prometheus data source, replayed request by request.
mod grafana;

// PromQL over HTTP: errors, limits, and the `minos query` command.
mod query;

// The ops API: first-start tokens, authentication.
mod ops;

// The host agent pushing to a real server.
mod agent;

// Pushed data: text import, the Pushgateway-compatible endpoint, server-side counters.
mod push;

// Scraping Prometheus endpoints: real and misbehaving targets, discovery, reloads.
mod scrape;

// Batch execution: tasks on real agents, recipes, the audit trail.
mod tasks;

// Alerting: rules in a real server, alert states across restarts, reloads, HostLost.
mod alerting;

// HTTPS: the server's certificate, agents and clients trusting a private CA.
mod tls;

// Forwarding stored samples with remote_write to a real Prometheus.
mod forward;
