//! Integration tests: the proxy in-process on port 0, real child processes, real sockets,
//! and the official MCP SDK clients (Node and Python) where the interop harness is installed.
#![allow(unreachable_pub)]

mod common;

mod audit;
mod auth_rejections;
mod bridge;
mod bridge_interop;
mod bridge_lb;
mod bridge_rmcp;
mod child_policy;
mod cli;
mod config_files;
mod drain;
mod edge;
mod fault_table;
mod faults;
mod interop;
mod legacy_sse;
mod lifecycle;
mod load_balancer;
mod metadata;
mod nginx_lb;
mod oidc;
mod ops;
mod rate_limits;
mod reload;
mod sandbox;
mod sandbox_interop;
mod sandbox_limits;
mod soak;
mod streamable;
mod telemetry;
mod tls;
mod token_expiry;
mod tool_rules;
