//! The inbox program's library part: its HTTP interface ([`api`]) and the production worker
//! ([`worker`]) and the command line's client ([`client`]), used by the `inbox` binary and by the tests that drive it over real HTTP.

pub mod api;
pub mod client;
pub mod config;
pub mod console;
pub mod webhooks;
pub mod worker;
