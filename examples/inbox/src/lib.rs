//! The inbox program's library part: its HTTP interface ([`api`]), used by the `inbox`
//! binary and by the tests that drive it over real HTTP.

pub mod api;
