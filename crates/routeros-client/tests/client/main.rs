//! Integration tests of routeros-client against a scripted server on 127.0.0.1:0.
//!
//! One test binary, grouped by feature. The scripted server (`support`) answers exactly what
//! each test stages, which is how the odd cases (reordering, late replies after `/cancel`,
//! garbage, a dying connection) are reproduced deterministically. Synchronisation is by
//! channels and by the order of sentences on the wire, never by sleeping.

mod commands;
mod failures;
mod heap;
mod lifecycle;
mod limits;
mod login;
mod mistakes;
mod streaming;
mod support;
mod timeouts;
mod tls;
mod typed;
